from lcdata.cli import main

main()
