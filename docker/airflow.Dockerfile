# The image every Airflow service of docker-compose.yml runs: the official Airflow image plus this
# project's runtime requirements. The project's code (dags/, plugins/, recsys/, sql/, templates/)
# is mounted by docker-compose.yml, not copied, so editing it needs no rebuild.
FROM apache/airflow:3.3.2

USER airflow
COPY --chown=airflow:root requirements.txt /tmp/recsys-requirements.txt

# torch first and alone, from PyTorch's CPU-only index: the pinned version's CPU build (about
# 200 MB) instead of the default CUDA build (several GB). Then the rest of requirements.txt minus
# what the image already has (Airflow and its providers, postgres, standard and celery included,
# with the Celery stack and the Redis client they were released with; torch, installed above;
# pgserver, the embedded server the stack does not need), with Airflow pinned to the image's
# version so pip never moves it.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "$(grep -E '^torch==' /tmp/recsys-requirements.txt)" \
    && grep -vE '^(torch|apache-airflow[a-z-]*|pgserver|celery|kombu|redis)([=<>!~ \[]|$)' /tmp/recsys-requirements.txt \
        > /tmp/recsys-requirements-image.txt \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/recsys-requirements-image.txt \
    && pip check

# Mount points of the named volumes, created here so the volumes start owned by the airflow user.
RUN mkdir -p /opt/airflow/project /opt/airflow/models /opt/airflow/data /opt/airflow/auth

ENV PYTHONPATH=/opt/airflow/project \
    OMP_NUM_THREADS=1
