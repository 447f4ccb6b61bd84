import os.path as osp
import sys

# tests import the literal reference transcription next to them
sys.path.insert(0, osp.dirname(__file__))
