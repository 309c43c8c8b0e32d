"""Publishing: a student on the Hugging Face Hub (`push`) and as a plain HubertModel (`export`).

    python -m hf_corrdistill.hub push FOLDER --repo_id ORG/NAME [--results results.json] [--dry_run DIR]
    python -m hf_corrdistill.hub.export --student FOLDER --output DIR
"""
