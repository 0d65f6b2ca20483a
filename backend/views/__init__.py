"""One module per view: a frozen Request in, a frozen Result out, shared by page and CLI."""
