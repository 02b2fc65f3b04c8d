"""Records, their store, and the JSON / HTML reports built from them."""
