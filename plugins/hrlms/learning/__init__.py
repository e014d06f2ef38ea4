"""Learning: assignment rules as code, completions back from the LMS/LRS, compliance marts' helpers."""
