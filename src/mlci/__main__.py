from mlci.cli import main

main(prog_name="mlci")
