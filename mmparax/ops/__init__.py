from .selective_scan import selective_scan, selective_scan_reference

__all__ = ['selective_scan', 'selective_scan_reference']
