"""Reading what a study or campaign produced: results tables (``tables``) and the HTML report (``page``)."""
