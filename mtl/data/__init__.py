"""Reading texts and labelled rows (`files`, over `sources`: opening, decoding and cutting input into lines; no
torch), batching rows by length (`batching`; no torch), and the tokenized training dataset with its task sampling
(`dataset`; torch)."""
