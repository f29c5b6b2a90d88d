"""Favorites and tags on results: a star per result, and free-form tags shared by many
results, each named once whatever its case."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('generations', '0007_generation_usage'),
    ]

    operations = [
        migrations.CreateModel(
            name='Tag',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=50)),
                ('key', models.CharField(editable=False, help_text='The name in one case: two tags never differ by case alone.', max_length=150, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['key'],
            },
        ),
        migrations.AddField(
            model_name='generationresult',
            name='favorite',
            field=models.BooleanField(default=False, help_text='Starred: one star per installation.'),
        ),
        migrations.CreateModel(
            name='ResultTag',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('result', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tag_links', to='generations.generationresult')),
                ('tag', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='result_links', to='generations.tag')),
            ],
        ),
        # A relation through ResultTag has no column of its own; SQLite would still copy
        # the whole results table to add it.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name='generationresult',
                    name='tags',
                    field=models.ManyToManyField(blank=True, related_name='results', through='generations.ResultTag', to='generations.tag'),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name='generationresult',
            index=models.Index(condition=models.Q(('favorite', True)), fields=['-id'], name='result_favorite_newest'),
        ),
        migrations.AddConstraint(
            model_name='resulttag',
            constraint=models.UniqueConstraint(fields=('tag', 'result'), name='result_tag_once'),
        ),
    ]
