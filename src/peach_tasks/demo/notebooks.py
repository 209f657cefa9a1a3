"""The demo's notebooks and task definitions, as data."""

TRAIN = [
    ("markdown", "# Train a model\nFits a logistic regression on the iris data that ships with "
                 "scikit-learn and, like the tutorial's TensorFlow example, saves its weights in Redis for "
                 "the API endpoints (the organisation's own namespace, when the platform has a Redis), else "
                 "in a file."),
    ("code",
     "%matplotlib inline\n"
     "import json\n"
     "import os\n"
     "from pathlib import Path\n"
     "\n"
     "from sklearn.datasets import load_iris\n"
     "from sklearn.linear_model import LogisticRegression\n"
     "\n"
     "\n"
     "def train_model():\n"
     "    data = load_iris()\n"
     "    model = LogisticRegression(max_iter=500).fit(data.data, data.target)\n"
     "    accuracy = float(model.score(data.data, data.target))\n"
     "    weights = json.dumps({'coef': model.coef_.tolist(), 'intercept': model.intercept_.tolist(),\n"
     "                          'accuracy': accuracy})\n"
     "    if os.environ.get('PEACH_REDIS_URL'):  # the platform's Redis, this organisation's user\n"
     "        import redis\n"
     "\n"
     "        key = os.environ['PEACH_REDIS_PREFIX'] + 'iris:weights'\n"
     "        redis.Redis.from_url(os.environ['PEACH_REDIS_URL']).set(key, weights)\n"
     "        where = f'Redis key {key}'\n"
     "    else:\n"
     "        out = Path(os.environ.get('DEMO_OUTPUT', '.')) / 'iris_weights.json'\n"
     "        out.write_text(weights)\n"
     "        where = str(out)\n"
     "    print(f'trained on {len(data.target)} rows, accuracy {accuracy:.3f}, weights in {where}')\n"
     "    return {'accuracy': accuracy, 'weights_in': where}\n"),
]

FAILING = [
    ("code",
     "def build_report():\n"
     "    rows = [1, 2, 3]\n"
     "    print('building a report from', len(rows), 'rows')\n"
     "    raise ValueError('the source table is empty: this demo task always fails')\n"),
]

METADATA = [
    ("code",
     "import json\n"
     "import os\n"
     "from datetime import datetime, timezone\n"
     "from pathlib import Path\n"
     "\n"
     "\n"
     "def fetch_metadata():\n"
     "    !echo 'shell escapes run as in Jupyter'\n"
     "    # Stands in for an API call: the notebooks of the repository are our 'articles'.\n"
     "    items = sorted((p.name, p.stat().st_size) for p in Path('.').glob('*.ipynb'))\n"
     "    out = Path(os.environ.get('DEMO_OUTPUT', '.')) / 'metadata.json'\n"
     "    out.write_text(json.dumps({'fetched_at': datetime.now(timezone.utc).isoformat(), 'items': items}))\n"
     "    print(f'fetched {len(items)} items into {out}')\n"
     "    return len(items)\n"),
]

SUMMARY = [
    ("markdown", "A full-notebook task: every code cell runs, in order."),
    ("code", "from tabulate import tabulate\nrows = [('chrts', 3), ('sesr', 5)]\n"),
    ("code", "def summarise():\n    print(tabulate(rows, headers=['codops', 'tasks']))\n    return len(rows)\n"),
]

NOTEBOOKS = {
    "train_model.ipynb": TRAIN,
    "build_report.ipynb": FAILING,
    "fetch_metadata.ipynb": METADATA,
    "summary.ipynb": SUMMARY,
}

PEACH_CONF = {
    "default.yaml": """\
codops: default
dependencies:
  - scikit-learn
  - redis
tasks:
  train_model:
    executor: python
    notebook: train_model.ipynb
    method: train_model
  build_report:
    executor: python
    notebook: build_report.ipynb
    method: build_report
  fetch_metadata:
    executor: python
    loop: metadata
    notebook: fetch_metadata.ipynb
    method: fetch_metadata
""",
    # chrts is written in today's PEACH form (named environments), default in the tutorial's.
    "chrts.yaml": """\
codops: chrts
py_environments:
  reports:
    dependencies:
      - tabulate
tasks:
  summary:
    executor: python
    notebook: summary.ipynb
    method: summarise
    full_notebook: true
    py_env: reports
""",
}
