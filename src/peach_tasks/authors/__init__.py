"""What notebook authors run on their own working copy: ``validate``, ``run`` (a local run
as the scheduler does it), and their command-line commands (``validate``, ``run``,
``trigger``, ``triggers``)."""
