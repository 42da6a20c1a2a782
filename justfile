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

# Train (quick SegResNet profile unless overridden, e.g. model=swinunetr)
train *overrides:
    uv run minivess train {{overrides}}

# Evaluate a model (checkpoint or registry URI) on the held-out fold
evaluate model="models:/minivess@champion" fold="0":
    uv run minivess evaluate --model {{model}} --data data/prepared/vesselnn --fold {{fold}} --subset val

# Segment a NIfTI/TIFF file or folder into out
predict input out model="models:/minivess@champion":
    uv run minivess predict {{input}} --model {{model}} --out {{out}}

# Export a model to one self-describing ONNX file (logged to its MLflow training run)
export out="model.onnx" model="models:/minivess@champion":
    uv run minivess export --model {{model}} --out {{out}}

# Serve serve.model (the champion) or the given model over HTTP (docs/serving.md)
serve model="":
    uv run minivess serve {{ if model == "" { "" } else { "--model " + model } }}

# Gradio demo in the browser on demo.host:demo.port (127.0.0.1:7860), see docs/serving.md
demo model="models:/minivess@champion" *args:
    uv run minivess demo --model {{model}} {{args}}

# Leaderboard of tracked runs, or runs sql "select ..."
runs *args:
    uv run minivess runs {{args}}

# Reproduce the DVC pipeline offline and push its outputs to the default (local) remote
repro:
    uv run dvc repro
    uv run dvc push

# Run the full test suite (as CI does)
test *args:
    uv run pytest {{args}}

# Lint, format check and type check
lint:
    uv run ruff check src tests examples benchmarks
    uv run ruff format --check src tests examples benchmarks
    uv run mypy

# Format the code
fmt:
    uv run ruff check --fix src tests examples
    uv run ruff format src tests examples

# Validate every docker compose profile without an engine (.env, else .env.example)
compose-check:
    #!/usr/bin/env sh
    set -eu
    compose="$(uv run python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
    env_file=.env; [ -f "$env_file" ] || env_file=.env.example
    for profile in dev monitoring serve full; do
        "$compose" --env-file "$env_file" --profile "$profile" config --quiet
        echo "$profile: valid ($env_file)"
    done

# Run the benchmark suite and rewrite docs/benchmarks.md (about 10 minutes on 2 cores)
bench *args:
    uv run python -m benchmarks.run_all {{args}}

# GPU figures (AMP speed-up, throughput, peak GPU memory); needs only torch + MONAI on a CUDA machine
bench-gpu out="benchmarks/results/gpu.json":
    python benchmarks/gpu.py --out {{out}}
