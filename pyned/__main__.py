from pyned.cli import main

raise SystemExit(main())
