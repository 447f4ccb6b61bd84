from .depthwise_conv import dynamic_depthwise_conv
from .selective_scan import selective_scan, selective_scan_reference

__all__ = [
    'dynamic_depthwise_conv', 'selective_scan', 'selective_scan_reference'
]
