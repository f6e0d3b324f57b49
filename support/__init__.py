"""Run infrastructure, kept out of the maths and out of train.py's story: the command-line helpers the three tools
share (cli), a run's files and resume checks (runs), machine, seeds and checkpoints (runtime), where a body's
weights come from (backbone_loading), and the tiny pretrained body of --demo (demo)."""
