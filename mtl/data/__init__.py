"""Reading texts and labelled rows from files (`files`, `stream`; no torch), batching rows by length (`batching`;
no torch), and the tokenized training dataset with its task sampling (`dataset`; torch)."""
