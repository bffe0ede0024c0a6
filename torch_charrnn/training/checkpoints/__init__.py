"""Checkpoints, in one place: reading one for any subcommand (``reading``, no Lightning, so
``charrnn sample`` starts fast), bringing one of an earlier release to today's layout (``legacy``,
no Lightning either), and writing them whole, one ``last.ckpt`` a run (``writing``, Lightning's
checkpoint I/O and callback)."""
