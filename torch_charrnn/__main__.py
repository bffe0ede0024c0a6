"""``python -m torch_charrnn`` is the ``charrnn`` command."""

from torch_charrnn.cli import main

raise SystemExit(main())
