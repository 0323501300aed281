"""End-to-end jobs (what each CLI command calls): they train, evaluate and write
metrics.json, figures and report.md."""
