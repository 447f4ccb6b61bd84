import os.path as osp

from setuptools import find_packages, setup


def read_requirements(name):
    with open(osp.join(osp.dirname(__file__), 'requirements', name)) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


version = {}
with open(osp.join(osp.dirname(__file__), 'mmparax', 'version.py')) as f:
    exec(f.read(), version)

setup(
    name='mmparax',
    version=version['__version__'],
    description='ParaX (Parameters as Experts) parameter-efficient '
    'fine-tuning for OpenMMLab 2.x dense prediction',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md')).read()
    if osp.exists(osp.join(osp.dirname(__file__), 'README.md')) else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'demo')),
    python_requires='>=3.8',
    install_requires=['torch>=2.0', 'mmcv>=2.0.0,<2.2.0'] +
    read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    zip_safe=False,
)
