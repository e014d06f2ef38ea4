"""HR (and later LMS) readers: YAML mappings, landing-folder files, paginated HTTP APIs."""
