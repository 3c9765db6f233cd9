"""Face glue for the SuperNet: data, loss, validation and training (the supernet package stays face-agnostic)."""
