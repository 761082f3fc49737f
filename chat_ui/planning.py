"""Plan mode: before answering, a planner model (the chat's `planner_model`, or the
answering model) writes a short plan for the latest question; the answer is then written
with that plan in its context. The plan is streamed, kept with the answer (messages.plan)
and shown folded above it. The generation runs both passes (chat_ui.generation)."""

from __future__ import annotations

# A plan is a few steps: more tokens would only delay the answer.
PLAN_MAX_TOKENS = 200

PLANNER_PROMPT = (
    "You plan answers; you do not answer. Read the conversation and write a short plan "
    "(at most five numbered steps, a few words each) for answering the user's latest "
    "message. Write only the plan."
)


def with_plan(system_prompt: str, plan: str) -> str:
    """The answering model's system prompt, with the plan to follow."""
    plan = plan.strip()
    if not plan:
        return system_prompt
    intro = "Answer the user's latest message following this plan:\n" + plan
    return f"{system_prompt}\n\n{intro}" if system_prompt else intro
