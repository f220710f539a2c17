# The Docker Engine must be running (the machine starts it); tests build images FROM scratch.
if ! docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; then
    echo "error: the Docker Engine is not reachable (docker info failed); start dockerd first" >&2
    exit 1
fi
echo "docker engine $(docker info --format '{{.ServerVersion}}')" >&2
