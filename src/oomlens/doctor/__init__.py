"""`oomlens doctor`: an assessment with evidence (checks over gathered facts), a plan
of changes with their recorded before values, and its journaled application."""
