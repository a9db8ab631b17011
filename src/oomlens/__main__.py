from oomlens.cli.main import main

raise SystemExit(main())
