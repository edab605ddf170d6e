"""The on-disk contracts every stage may import, and none of them imports a stage (no torch): the graphs' I/O
spec, the checkpoint folder, the export manifest and its validation record, the prediction record, publishing a
folder and writing a report safely, and the library versions and core counts recorded beside them."""
