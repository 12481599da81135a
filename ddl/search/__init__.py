"""ddl's own search, on Optuna (the `optuna` extra): a Hydra sweeper whose trials report each
evaluated epoch's dev error and can be pruned, drawn from one study that every process of a search
shares through a journal file. sweeper.py is the Hydra edge; study.py the Optuna one."""
