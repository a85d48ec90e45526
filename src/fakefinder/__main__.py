from fakefinder.cli import main

main()
