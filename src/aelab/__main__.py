from aelab.cli.main import main

main()
