# Recipes a user types; each delegates to uv and the minivess CLI.
set dotenv-load := false

vesselnn := env_var_or_default("MINIVESS_VESSELNN_DIR", "../shared/data/vesselnn")

# List the recipes
default:
    @just --list

# Install the locked environment (CPU or CUDA torch as resolved by uv)
sync:
    uv sync --locked

# Prepare the VesselNN volumes into a validated dataset (data/prepared/vesselnn)
prepare:
    uv run minivess data prepare {{vesselnn}} --out data/prepared/vesselnn --overwrite

# Reproduce the DVC pipeline offline and push its outputs to the default (local) remote
repro:
    uv run dvc repro
    uv run dvc push

# Run the full test suite (as CI does)
test *args:
    uv run pytest {{args}}

# Lint, format check and type check
lint:
    uv run ruff check src tests examples
    uv run ruff format --check src tests examples
    uv run mypy

# Format the code
fmt:
    uv run ruff check --fix src tests examples
    uv run ruff format src tests examples
