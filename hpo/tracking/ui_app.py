"""The MLflow UI as ``hpo ui`` serves it: MLflow's own app, opening on its runs tables.

MLflow 3.17's UI shows an experiment in its "GenAI" view (traces, an assistant) or its "Model
training" view (the runs table: study -> rounds -> trials). It takes the view from the page's
``workflowType`` URL parameter, else from a switch the browser keeps in its local storage,
"GenAI" until the user flips it; the experiment's ``mlflow.experimentKind`` tag is not read. So
the page this app serves at ``/`` sets that switch to "Model training" when the browser has
never set it: from the root URL a click on a study lands on its runs. A user who flips the
switch keeps their choice. Everything else is MLflow's app, unchanged.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app as mlflow_app
from starlette.responses import HTMLResponse
from starlette.types import Receive, Scope, Send

#: The key and value MLflow's UI keeps its view switch under (``useLocalStorage``, version 1).
VIEW_KEY = "mlflow.workflowType_v1"
VIEW = "machine_learning"

_DEFAULT_VIEW = (f'<script>try{{localStorage.getItem("{VIEW_KEY}")||'
                 f'localStorage.setItem("{VIEW_KEY}",JSON.stringify("{VIEW}"))}}catch(e){{}}'
                 f'</script>').encode()


def _index() -> bytes:
    """MLflow's index.html with the default view set before its scripts run."""
    html = (Path(flask_app.static_folder) / "index.html").read_bytes()
    return html.replace(b"<head>", b"<head>" + _DEFAULT_VIEW, 1)


_INDEX = _index()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
        await HTMLResponse(_INDEX)(scope, receive, send)
        return
    await mlflow_app(scope, receive, send)
