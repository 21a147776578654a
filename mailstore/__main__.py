from mailstore.cli import main

main()
