"""Device-aware architecture search, split as in OFA's ``nas/``: encoding (``supernet.space``),
accuracy prediction (``predictor``), efficiency prediction (``efficiency``) and search (``search``)."""
