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
EXPOSE 8000
CMD ["gunicorn", "--config", "python:receiver.gunicorn_conf", "receiver.wsgi:app"]
