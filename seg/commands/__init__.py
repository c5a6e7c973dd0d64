"""seg.commands: the ``seg`` subcommands, one module per stage (the top floor: a command may ask any
package). Each module exports ``COMMANDS`` (name -> :class:`seg.cli.Command`) and imports only the
standard library at module level, so ``seg --help`` is fast; a command loads its stage inside ``run``.
"""
