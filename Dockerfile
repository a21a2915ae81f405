FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=comicmem_site.settings.production \
    COMICMEM_VAR_DIR=/app/var

WORKDIR /app
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# collectstatic needs settings that import cleanly; these placeholders never reach a running container.
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 comicmem \
    && mkdir -p /app/var \
    && chown -R comicmem /app/var
USER comicmem
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "comicmem_site.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4"]
