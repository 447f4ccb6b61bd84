"""Silencing the upstream deprecation notices every tool run prints.

Only the exact messages below, raised from the exact upstream modules, are
ignored; a warning about the user's own config or code, or the same text
raised anywhere else, still shows.
"""
import warnings

# (message regex, module regex): matched against the start of the message
# and the whole ``__name__`` of the module that calls ``warnings.warn``.
UPSTREAM_WARNINGS = (
    # mmseg's decode heads build their losses through the old builder
    (r'``build_loss`` would be deprecated soon, please use '
     r'``mmseg\.registry\.MODELS\.build\(\)``',
     r'mmseg\.models\.builder\Z'),
    # every CrossEntropyLoss of the mmseg heads and of mmdet's RPN / RoI
    # heads, on its default reduction
    (r'Default ``avg_non_ignore`` is False, if you would like to ignore '
     r'the certain label and average loss over non-ignore labels',
     r'(mmseg|mmdet)\.models\.losses\.cross_entropy_loss\Z'),
)


def silence_upstream_warnings() -> None:
    """Ignore the upstream ``UserWarning`` s listed in ``UPSTREAM_WARNINGS``.

    mmseg's ``build_loss would be deprecated soon`` and mmseg's / mmdet's
    ``Default avg_non_ignore is False`` (``CrossEntropyLoss``). Call once at
    the start of a tool; calling again adds nothing (``warnings`` keeps one
    copy of an identical filter).
    """
    for message, module in UPSTREAM_WARNINGS:
        warnings.filterwarnings(
            'ignore', message=message, category=UserWarning, module=module)
