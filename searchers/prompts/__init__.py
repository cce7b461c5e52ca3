"""Prompt templates (``string.Template`` files, shipped as package data).

Load one with :func:`searchers.prompting.load_template`; users override a template with the
``llm.prompt_template`` path. Fields a template may use: ``$task_description``,
``$action_names``, ``$num_actions``, ``$target_count``, ``$max_classes``, ``$history``,
``$pending``, ``$format_instructions`` (and ``$pool`` in the prompt-pool templates).
"""
