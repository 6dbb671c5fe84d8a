"""Weight files: the shipped default model lives in default/ (the store arrives with issue 3)."""
