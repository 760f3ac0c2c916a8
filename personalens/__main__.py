from personalens.cli.main import main

raise SystemExit(main())
