"""Clinical validation reports: statistics, figures, HTML, PDF and JSON."""
