from .runtime import (
    add_run_arguments,
    apply_resume,
    build_runner,
    check_optim_wrapper,
    enable_amp,
    finish_run,
    is_amp,
    load_config,
    parse_run_args,
    prepare_cpu_distributed,
    set_out,
    set_show_dir,
    setup_checkpoint_trust,
    setup_run,
)
from .trusted_loading import (
    TRUST_ENV,
    TRUST_FLAG,
    UntrustedCheckpointError,
    load_from_safe,
    register_trusted_loader,
    trust_checkpoints,
    trust_reason,
    trusted_paths,
)

__all__ = [
    'add_run_arguments', 'apply_resume', 'build_runner',
    'check_optim_wrapper', 'enable_amp', 'finish_run', 'is_amp',
    'load_config', 'parse_run_args', 'prepare_cpu_distributed', 'set_out',
    'set_show_dir', 'setup_checkpoint_trust', 'setup_run', 'TRUST_ENV',
    'TRUST_FLAG', 'UntrustedCheckpointError', 'load_from_safe',
    'register_trusted_loader', 'trust_checkpoints', 'trust_reason',
    'trusted_paths'
]
