#!/usr/bin/env bash
# Startup script of the txt2img staging VM (Compute Engine, Ubuntu 22.04 LTS, one NVIDIA L4
# or T4). It runs as root on every boot and is idempotent: it installs what is missing, then
# (re)starts the compose stack with the images named in the instance metadata, in one of two
# modes (MODE, from the metadata txt2img-mode):
#
#   pubsub      the API publishes to Pub/Sub, the GPU worker pulls (`python -m gpu_worker
#               --pull`); images in Cloud Storage. Compose profile `gpu`. The default.
#   selfhosted  no Pub/Sub: the API publishes Celery tasks on Redis, the Celery GPU worker
#               (`python -m gpu_worker.celery_worker`) runs them; PostgreSQL; images in the
#               volume txt2img-blobs (BLOB_DIR). Compose profile `selfhosted`.
#
#   1. NVIDIA driver 535 (the branch Cloud Run's L4s run), Ubuntu's signed server build;
#      reboots once if the kernel module cannot be loaded into the running kernel.
#   2. Docker Engine + the Compose plugin, from Docker's apt repository.
#   3. The NVIDIA Container Toolkit, from NVIDIA's apt repository, as a Docker runtime.
#   4. Artifact Registry credentials (gcloud auth configure-docker).
#   5. /etc/txt2img/app.env: the settings from metadata plus the secrets from Secret Manager.
#   6. The model, when metadata names one in Cloud Storage (gcloud storage rsync).
#   7. docker compose pull && up, with docker-compose.yml + compose.vm.yml from metadata;
#      the other mode's worker is removed first (switching modes leaves no second worker on
#      the GPU).
#
# Instance metadata it reads (docs/deploy-vm.md creates the VM with all of them):
#   txt2img-api-image, txt2img-worker-image  image references (required)
#   txt2img-compose, txt2img-compose-vm      docker-compose.yml and compose.vm.yml (required)
#   txt2img-env                              KEY=VALUE settings of both processes (required)
#   txt2img-mode                             pubsub (default) or selfhosted
#   txt2img-profiles                         COMPOSE_PROFILES (default gpu,local-redis,local-postgres;
#                                            selfhosted,local-redis,local-postgres in selfhosted mode)
#   txt2img-model-uri                        gs://BUCKET/FOLDER of a diffusers model (optional)
#   txt2img-secret-prefix                    Secret Manager ids prefix (default txt2img)
#
# Logs: `sudo journalctl -u google-startup-scripts.service`; rerun with
# `sudo google_metadata_script_runner startup`.
set -euo pipefail

readonly ETC_DIR=/etc/txt2img
readonly STACK_DIR=/opt/txt2img
readonly DATA_DIR=/var/lib/txt2img
# Where compose.vm.yml mounts the images volume in the self-hosted mode.
readonly SELFHOSTED_BLOB_DIR=/var/lib/txt2img-blobs
readonly DRIVER_BRANCH=535-server
readonly DOCKER_KEY_FINGERPRINT=9DC858229FC7DD38854AE2D88D81803C0EBFCD88
readonly NVIDIA_KEY_FINGERPRINT=C95B321B61E88C1809C4F759DDCAE044F796ECB0
readonly METADATA_URL=http://metadata.google.internal/computeMetadata/v1
export DEBIAN_FRONTEND=noninteractive
# gcloud comes as a snap on Google's Ubuntu images.
export PATH="${PATH}:/snap/bin"

log() {
  echo "txt2img-startup: $*"
}

# metadata PATH: a value from the metadata server (fails when it is not set).
metadata() {
  curl --silent --fail --header "Metadata-Flavor: Google" "${METADATA_URL}/$1"
}

# attribute KEY: an instance metadata attribute, or nothing when it is not set.
attribute() {
  curl --silent --fail --header "Metadata-Flavor: Google" \
    "${METADATA_URL}/instance/attributes/$1" || true
}

required_attribute() {
  local value
  value="$(attribute "$1")"
  if [[ -z "${value}" ]]; then
    log "instance metadata ${1} is required (see docs/deploy-vm.md)" >&2
    exit 1
  fi
  printf '%s' "${value}"
}

# add_apt_key URL FINGERPRINT KEYRING: fetch a repository signing key, refuse it unless it
# carries the expected fingerprint, and store it dearmored for `signed-by`.
add_apt_key() {
  local url="$1" fingerprint="$2" keyring="$3" tmp
  tmp="$(mktemp)"
  curl --silent --show-error --fail --location "${url}" --output "${tmp}"
  if ! gpg --show-keys --with-colons "${tmp}" | grep -q "^fpr:::::::::${fingerprint}:"; then
    log "the key at ${url} does not have fingerprint ${fingerprint}; refusing it" >&2
    rm -f "${tmp}"
    exit 1
  fi
  install -d -m 0755 "$(dirname "${keyring}")"
  gpg --batch --yes --dearmor --output "${keyring}" "${tmp}"
  chmod 0644 "${keyring}"
  rm -f "${tmp}"
}

install_base_packages() {
  apt-get update
  apt-get install -y --no-install-recommends ca-certificates curl gnupg jq ubuntu-drivers-common
}

install_nvidia_driver() {
  local gpu
  if gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"; then
    log "NVIDIA driver present: ${gpu}"
    return
  fi
  log "installing NVIDIA driver ${DRIVER_BRANCH}"
  ubuntu-drivers install --gpgpu "nvidia:${DRIVER_BRANCH}"
  apt-get install -y --no-install-recommends "nvidia-utils-${DRIVER_BRANCH}"
  if modprobe nvidia && nvidia-smi >/dev/null 2>&1; then
    return
  fi
  # The driver's modules were built for a newer kernel than the one running: boot into it.
  # The marker stops a reboot loop if the driver still does not load afterwards.
  if [[ ! -e "${DATA_DIR}/.rebooted-for-driver" ]]; then
    install -d -m 0755 "${DATA_DIR}"
    touch "${DATA_DIR}/.rebooted-for-driver"
    log "rebooting once to load the NVIDIA driver"
    systemctl reboot
    exit 0
  fi
  log "the NVIDIA driver does not load even after a reboot; see dmesg" >&2
  exit 1
}

install_docker() {
  if docker compose version >/dev/null 2>&1; then
    return
  fi
  log "installing Docker Engine and the Compose plugin"
  local codename arch
  codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)"
  arch="$(dpkg --print-architecture)"
  add_apt_key https://download.docker.com/linux/ubuntu/gpg "${DOCKER_KEY_FINGERPRINT}" \
    /etc/apt/keyrings/docker.gpg
  echo "deb [arch=${arch} signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/ubuntu ${codename} stable" \
    >/etc/apt/sources.list.d/docker.list
  apt-get update
  apt-get install -y --no-install-recommends docker-ce docker-ce-cli containerd.io \
    docker-buildx-plugin docker-compose-plugin
  systemctl enable --now docker
}

install_nvidia_container_toolkit() {
  if command -v nvidia-ctk >/dev/null 2>&1 && docker info 2>/dev/null | grep -q nvidia; then
    return
  fi
  log "installing the NVIDIA Container Toolkit"
  add_apt_key https://nvidia.github.io/libnvidia-container/gpgkey "${NVIDIA_KEY_FINGERPRINT}" \
    /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl --silent --show-error --fail --location \
    https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \
      >/etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get update
  apt-get install -y --no-install-recommends nvidia-container-toolkit
  nvidia-ctk runtime configure --runtime=docker
  systemctl restart docker
}

# secret NAME: the latest version of a Secret Manager secret of this project.
secret() {
  gcloud secrets versions access latest --secret="$1" --project="${PROJECT_ID}"
}

# env_line KEY VALUE: a KEY='VALUE' line for a Compose env_file. Single quotes keep the value
# literal (Compose interpolates `$` in unquoted values), so a value may not contain one.
env_line() {
  if [[ "$2" == *"'"* || "$2" == *$'\n'* ]]; then
    log "the value of $1 contains a single quote or a newline; refusing it" >&2
    exit 1
  fi
  printf "%s='%s'\n" "$1" "$2"
}

# env_value KEY < FILE: the last value of KEY=... in env-file lines, or nothing.
env_value() {
  sed -n "s/^$1=//p" | tail -n 1 | sed -e "s/^'\(.*\)'$/\1/" -e 's/^"\(.*\)"$/\1/'
}

# read_mode: MODE from the metadata txt2img-mode, pubsub when unset.
read_mode() {
  local mode
  mode="$(attribute txt2img-mode)"
  mode="${mode:-pubsub}"
  if [[ "${mode}" != pubsub && "${mode}" != selfhosted ]]; then
    log "instance metadata txt2img-mode must be pubsub or selfhosted, not ${mode}" >&2
    exit 1
  fi
  printf '%s' "${mode}"
}

# check_mode PROFILES SETTINGS: refuse Compose profiles or settings that belong to the other
# mode (its worker would take the GPU, or the API would publish where no worker listens).
check_mode() {
  local profiles="$1" settings="$2" queue app_profile
  if [[ "${MODE}" == selfhosted && ",${profiles}," != *",selfhosted,"* ]]; then
    log "txt2img-mode=selfhosted needs the Compose profile selfhosted in txt2img-profiles" >&2
    exit 1
  fi
  if [[ "${MODE}" == selfhosted && ",${profiles}," == *",gpu,"* ]] \
    || [[ "${MODE}" == pubsub && ",${profiles}," == *",selfhosted,"* ]]; then
    log "txt2img-profiles ${profiles} would start the other mode's worker (txt2img-mode=${MODE})" >&2
    exit 1
  fi
  # JOB_QUEUE, else the one APP_ENV=selfhosted implies.
  queue="$(env_value JOB_QUEUE <<<"${settings}")"
  app_profile="$(env_value APP_ENV <<<"${settings}")"
  if [[ -z "${queue}" && "${app_profile}" == selfhosted ]]; then
    queue=celery
  fi
  if [[ "${MODE}" == selfhosted && "${queue}" != celery ]]; then
    log "txt2img-mode=selfhosted needs JOB_QUEUE=celery in txt2img-env" >&2
    exit 1
  fi
  if [[ "${MODE}" == pubsub && "${queue}" == celery ]]; then
    log "JOB_QUEUE=celery in txt2img-env needs txt2img-mode=selfhosted" >&2
    exit 1
  fi
}

write_configuration() {
  local api_image worker_image profiles prefix model_uri app_env compose_env postgres_password
  local settings pepper signing webhook_signing redis_url database_url model_path blob_dir
  api_image="$(required_attribute txt2img-api-image)"
  worker_image="$(required_attribute txt2img-worker-image)"
  profiles="$(attribute txt2img-profiles)"
  if [[ "${MODE}" == selfhosted ]]; then
    profiles="${profiles:-selfhosted,local-redis,local-postgres}"
  else
    profiles="${profiles:-gpu,local-redis,local-postgres}"
  fi
  prefix="$(attribute txt2img-secret-prefix)"
  prefix="${prefix:-txt2img}"
  model_uri="$(attribute txt2img-model-uri)"

  install -d -m 0700 "${ETC_DIR}"
  install -d -m 0755 "${STACK_DIR}" "${DATA_DIR}" "${DATA_DIR}/models"
  required_attribute txt2img-compose >"${STACK_DIR}/docker-compose.yml"
  required_attribute txt2img-compose-vm >"${STACK_DIR}/compose.vm.yml"

  # A local PostgreSQL gets a random password, kept across boots.
  if [[ ! -s "${ETC_DIR}/postgres-password" ]]; then
    (umask 077 && openssl rand -hex 24 >"${ETC_DIR}/postgres-password")
  fi
  postgres_password="$(cat "${ETC_DIR}/postgres-password")"

  # The operator's settings, then the secrets, then what the settings leave out: REDIS_URL
  # and DATABASE_URL of the local containers when their profiles are on, else from Secret
  # Manager (PREFIX-redis-url, PREFIX-database-url); MODEL_PATH of the synced model; in the
  # self-hosted mode BLOB_DIR, the images volume.
  settings="$(required_attribute txt2img-env)"
  check_mode "${profiles}" "${settings}"
  pepper="$(secret "${prefix}-api-key-pepper")"
  signing="$(secret "${prefix}-url-signing-secret")"
  webhook_signing="$(secret "${prefix}-webhook-signing-secret")"
  redis_url="$(env_value REDIS_URL <<<"${settings}")"
  database_url="$(env_value DATABASE_URL <<<"${settings}")"
  model_path="$(env_value MODEL_PATH <<<"${settings}")"
  blob_dir="$(env_value BLOB_DIR <<<"${settings}")"
  if [[ -z "${redis_url}" && ",${profiles}," == *",local-redis,"* ]]; then
    redis_url="redis://redis:6379/0"
  elif [[ -z "${redis_url}" ]]; then
    redis_url="$(secret "${prefix}-redis-url")"
  fi
  if [[ -z "${database_url}" && ",${profiles}," == *",local-postgres,"* ]]; then
    database_url="postgresql+psycopg://txt2img:${postgres_password}@postgres:5432/txt2img"
  elif [[ -z "${database_url}" ]]; then
    database_url="$(secret "${prefix}-database-url")"
  fi
  if [[ -z "${model_path}" && -n "${model_uri}" ]]; then
    model_path=/mnt/models/current
  fi
  if [[ -z "${blob_dir}" && "${MODE}" == selfhosted ]]; then
    blob_dir="${SELFHOSTED_BLOB_DIR}"
  fi

  app_env="${ETC_DIR}/app.env"
  (
    umask 077
    {
      printf '%s\n' "${settings}"
      env_line API_KEY_PEPPER "${pepper}"
      env_line URL_SIGNING_SECRET "${signing}"
      env_line WEBHOOK_SIGNING_SECRET "${webhook_signing}"
      env_line REDIS_URL "${redis_url}"
      env_line DATABASE_URL "${database_url}"
      if [[ -n "${model_path}" ]]; then
        env_line MODEL_PATH "${model_path}"
      fi
      if [[ -n "${blob_dir}" ]]; then
        env_line BLOB_DIR "${blob_dir}"
      fi
    } >"${app_env}.new"
  )
  mv "${app_env}.new" "${app_env}"

  compose_env="${ETC_DIR}/compose.env"
  (
    umask 077
    cat >"${compose_env}" <<EOF
COMPOSE_PROJECT_NAME=txt2img
COMPOSE_PROFILES=${profiles}
API_IMAGE=${api_image}
WORKER_IMAGE=${worker_image}
POSTGRES_PASSWORD=${postgres_password}
EOF
  )

  if [[ -n "${model_uri}" ]]; then
    log "syncing the model from ${model_uri}"
    install -d -m 0755 "${DATA_DIR}/models/current"
    gcloud storage rsync --recursive --delete-unmatched-destination-objects \
      "${model_uri%/}" "${DATA_DIR}/models/current"
    chmod -R a+rX "${DATA_DIR}/models/current"
  fi

  # Registry host of the images, e.g. us-central1-docker.pkg.dev.
  gcloud auth configure-docker "${api_image%%/*}" --quiet
  if [[ "${worker_image%%/*}" != "${api_image%%/*}" ]]; then
    gcloud auth configure-docker "${worker_image%%/*}" --quiet
  fi
}

start_stack() {
  # Compose reads COMPOSE_PROFILES from the env file too; exported, it does not depend on that.
  local profiles
  profiles="$(env_value COMPOSE_PROFILES <"${ETC_DIR}/compose.env")"
  export COMPOSE_PROFILES="${profiles}"
  local compose=(docker compose --env-file "${ETC_DIR}/compose.env"
    --file "${STACK_DIR}/docker-compose.yml" --file "${STACK_DIR}/compose.vm.yml")
  # After a change of mode the other mode's worker would keep running (up leaves containers of
  # services whose profile is off) and hold the GPU: remove it. Nothing to do when it is absent.
  local other_worker=celery-worker
  if [[ "${MODE}" == selfhosted ]]; then
    other_worker=worker
  fi
  log "removing the ${other_worker} container, if any (txt2img-mode=${MODE})"
  "${compose[@]}" rm --stop --force "${other_worker}"
  log "pulling images"
  "${compose[@]}" pull --quiet
  log "starting the stack"
  "${compose[@]}" up --detach --no-build --remove-orphans
  "${compose[@]}" ps
}

main() {
  install_base_packages
  PROJECT_ID="$(metadata project/project-id)"
  readonly PROJECT_ID
  MODE="$(read_mode)"
  readonly MODE
  log "mode: ${MODE}"
  install_nvidia_driver
  install_docker
  install_nvidia_container_toolkit
  write_configuration
  start_stack
  log "done"
}

main "$@"
