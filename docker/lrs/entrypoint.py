"""Write Ralph's Basic-auth file from LRS_USERNAME / LRS_PASSWORD (only a bcrypt hash reaches the
disk), then serve the patched app on 0.0.0.0:8100 inside the container network (docker-compose.yaml
publishes it on 127.0.0.1 only)."""
import json
import os
import sys

import bcrypt

user, password = os.environ.get("LRS_USERNAME"), os.environ.get("LRS_PASSWORD")
if not user or not password:
    sys.exit("LRS_USERNAME and LRS_PASSWORD must be set")
auth = [{"username": user, "hash": bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode(),
         "scopes": ["all"], "agent": {"objectType": "Agent", "account": {"homePage": "https://hrlms.local/lrs",
                                                                         "name": user}}}]
fd = os.open(os.environ["RALPH_AUTH_FILE"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as fh:
    json.dump(auth, fh)
os.environ.pop("LRS_PASSWORD")
os.execv(sys.executable, [sys.executable, "-I", "/app/ralph_app.py", "--host", "0.0.0.0", "--port", "8100"])
