"""Which tokens of a ViT an analysis or an importance reads (torch-free, for settings and the command line)."""

#: token scopes: which token positions a neuron is read and intervened at (class token, patches, all)
TOKEN_SCOPES = ("cls", "patches", "all")
