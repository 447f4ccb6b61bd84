"""Reading ``.safetensors`` files: tensors and a header of strings, no code."""
from collections import OrderedDict
from typing import Dict, Tuple

SAFETENSORS_EXT = '.safetensors'


def read_safetensors(path: str, device: str = 'cpu'
                     ) -> Tuple['OrderedDict', Dict[str, str]]:
    """``(tensors, header metadata)`` of ``path``, read through a memory map.

    Raises:
        DamagedCheckpointError: The file is cut off or not safetensors.
    """
    from safetensors import SafetensorError, safe_open

    from .restricted_load import damaged
    try:
        with safe_open(path, framework='pt', device=device) as f:
            return (OrderedDict((k, f.get_tensor(k)) for k in f.keys()),
                    f.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise damaged(path, path, 'it is not a whole safetensors file '
                      f'({error})') from error


def write_safetensors(path: str, tensors: Dict, metadata: Dict[str, str] =
                      None) -> None:
    """Write ``tensors`` (copied to contiguous CPU memory) and ``metadata``
    to ``path``, whole or not at all."""
    from safetensors.torch import save

    from .atomic_file import atomic_write
    data = save({k: v.detach().cpu().contiguous().clone()
                 for k, v in tensors.items()},
                metadata=dict(metadata or {}, format='pt'))
    with atomic_write(path) as f:
        f.write(data)
