from syncwatch.cli import main

main()
