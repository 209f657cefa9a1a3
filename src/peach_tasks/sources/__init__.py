"""Where tasks come from: git repositories (and GitLab discovery), the definition files in
them (YAML read with its lines), the requirements they list, and the notebooks they name."""
