FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY receiver receiver
COPY workers workers
COPY models models
COPY providers providers
COPY tasks tasks
RUN pip install --no-cache-dir .
RUN useradd --create-home payhooks
USER payhooks
# web on $PORT (8000); the optional api process (WEB_ROUTES=api) on its own PORT, 8001 in compose
EXPOSE 8000 8001
# The Procfile's web: gunicorn with gevent workers and request deadlines (receiver/gunicorn_conf.py)
CMD ["gunicorn", "--config", "python:receiver.gunicorn_conf", "receiver.wsgi:app"]
