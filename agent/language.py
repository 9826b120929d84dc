"""Answer in the user's language: English, or Chinese when the message has Chinese in it."""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff]")
# A question mark ending a sentence (not one inside a URL's query string); a full-width one is
# always a question, and Chinese puts no space after it.
QUESTION = re.compile(r"？|\?(?:\s|$|[)）\"'”])")

LANGUAGES = ("en", "zh")

MESSAGES: dict[str, dict[str, str]] = {
    "help": {
        "en": "I can preview deploys and scaling, roll back, approve, reject, cancel, apply and "
        "retry releases, promote between environments, freeze and unfreeze targets, and show "
        'status, logs, approvals, freezes and timelines. For example: "deploy web 1.4.2 to '
        'prod", "scale worker to 3 in staging", "approve R-42", "promote web from staging to '
        'prod".',
        "zh": "我可以预览发布和扩缩容、回滚、批准、拒绝、取消、执行和重试发布，在环境间推进、"
        "冻结和解冻环境，也能查看状态、日志、审批、冻结和时间线。例如："
        '"部署 web 1.4.2 到生产"、"把 worker 扩容到 3 个 预发"、'
        '"批准 R-42"、"把 payment 回滚到上一个版本"。',
    },
    "injection": {
        "en": "Previews and approvals cannot be skipped, whoever asks; "
        "I will follow the normal flow.",
        "zh": "无论谁要求，预览和审批都不能跳过；我会按正常流程处理。",
    },
    "which_project_of_service": {
        "en": "{service} exists in {projects}: which project do you mean?",
        "zh": "{service} 存在于 {projects}：你指的是哪个项目？",
    },
    "several_projects": {
        "en": "That names several projects ({projects}): which one?",
        "zh": "这里提到了多个项目（{projects}）：是哪一个？",
    },
    "which_project": {
        "en": "Which project? I know {projects}.",
        "zh": "哪个项目？我知道 {projects}。",
    },
    "no_such_environment": {
        "en": "{project} has no {environment} environment; it has {environments}. Which one?",
        "zh": "{project} 没有 {environment} 环境；它有 {environments}。是哪一个？",
    },
    "which_environment": {
        "en": "Which environment of {project}: {environments}?",
        "zh": "{project} 的哪个环境：{environments}？",
    },
    "which_release": {
        "en": 'Which release? Give its id, e.g. "{example}".',
        "zh": '哪个发布？请给出编号，例如 "{example}"。',
    },
    "which_service_scale": {
        "en": "Which service should I scale? Known services: {services}.",
        "zh": "要扩缩容哪个服务？已知服务：{services}。",
    },
    "how_many": {
        "en": "To how many replicas should I scale {services}?",
        "zh": "扩缩到多少个副本？（{services}）",
    },
    "unknown_service": {
        "en": "I don't know a service named {service}. Known services: {services}.",
        "zh": "我不认识名为 {service} 的服务。已知服务：{services}。",
    },
    "which_service_deploy": {
        "en": "Which service should I deploy? Known services: {services}.",
        "zh": "要发布哪个服务？已知服务：{services}。",
    },
    "which_version": {"en": "Which version of {services}?", "zh": "{services} 要发布哪个版本？"},
    "confirm_submit": {
        "en": "Confirm the card to submit {release}.",
        "zh": "确认卡片即可提交 {release}。",
    },
    "confirm_run": {
        "en": "Confirm the card to run {tool} ({what}).",
        "zh": "确认卡片后执行 {tool}（{what}）。",
    },
    "same_as_what": {
        "en": 'Same as what? Say the whole request, e.g. "deploy web 1.4.2 to staging".',
        "zh": '和什么一样？请把完整的指令说一遍，例如 "部署 web 1.4.2 到预发"。',
    },
    "nothing_to_confirm": {
        "en": "There is nothing waiting for a yes here. Confirm a card with its button, or "
        'tell me what to do, e.g. "apply R-42".',
        "zh": "这里没有等待确认的操作。请用卡片上的按钮确认，"
        '或直接告诉我要做什么，例如 "执行 R-42"。',
    },
    "what_to_do_with": {
        "en": "What should I do with {releases}: show, approve, reject, submit, apply or cancel?",
        "zh": "要对 {releases} 做什么：查看、批准、拒绝、提交、执行还是取消？",
    },
    "quoted_ignored": {
        "en": "I did not act on the quoted text.",
        "zh": "引用的文字我只当作内容，没有执行。",
    },
    "too_many_cards": {
        "en": "I proposed the first {count} changes; ask again for the rest.",
        "zh": "我只提出了前 {count} 个变更；其余的请再发一次。",
    },
    "failed_because": {
        "en": "{release} is {state}: {reason}",
        "zh": "{release} 状态 {state}：{reason}",
    },
    "approve_after_preview": {
        "en": "A new release is approved after its preview and submission, by someone else; "
        "I prepared the preview.",
        "zh": "新发布要先预览、提交，再由其他人审批；我先准备了预览。",
    },
    "apply_later": {
        "en": "Apply it once the step before is confirmed; I did not chain the apply.",
        "zh": "请等前一步确认后再执行；我没有把执行串在后面。",
    },
    "confirm_preview": {
        "en": "Confirm the card to preview this change; nothing is created until you do.",
        "zh": "确认卡片后才会预览这个变更；在此之前什么都不会创建。",
    },
    "card_limit": {
        "en": "I stopped at {limit} cards for one message; ask again for the rest.",
        "zh": "一条消息最多生成 {limit} 张卡片，其余的请再发一次。",
    },
    "promote_to_where": {
        "en": "Promote {project} to which environment: {environments}?",
        "zh": "把 {project} 推到哪个环境：{environments}？",
    },
    "promote_from_where": {
        "en": "From which environment should I promote {what} to {destination}: {environments}?",
        "zh": "要从哪个环境把 {what} 推到 {destination}：{environments}？",
    },
    "freeze_missing": {
        "en": "To freeze {where} I need {missing}",
        "zh": "冻结 {where} 还需要：{missing}",
    },
    "freeze_needs_until": {
        "en": 'until when (e.g. "for 2h" or "until Monday 09:00"; times are in {zone});',
        "zh": '截止时间（例如 "2 小时" 或 "到周一 9 点"，时区 {zone}）；',
    },
    "freeze_needs_reason": {
        "en": 'the reason (e.g. "— incident 42").',
        "zh": '原因（例如 "原因：事故 42"）。',
    },
    "did_you_mean": {"en": "Did you mean {name}?", "zh": "你是指 {name} 吗？"},
    "choices": {"en": "Open ones: {releases}.", "zh": "当前可选：{releases}。"},
    "nothing_done": {"en": "OK, I did nothing.", "zh": "好的，我什么都没做。"},
    "planner_failed": {
        "en": "I could not work that out; try again.",
        "zh": "我没能理解这条指令，请再试一次。",
    },
}


def language_of(text: str) -> str:
    """`zh` if the text has Chinese characters, else `en`."""
    return "zh" if CJK.search(text) else "en"


def reply_language(text: str, chosen: str | None = None) -> str:
    """The language to answer `text` in: Chinese if it is written in Chinese, else the
    language the user's console is set to (`chosen`), else English."""
    if CJK.search(text):
        return "zh"
    return chosen if chosen in LANGUAGES else "en"


def asks(text: str | None) -> bool:
    """Whether a reply is a question to the user."""
    return bool(text) and QUESTION.search(text or "") is not None


def say(key: str, lang: str, **values: object) -> str:
    """A message in `lang` (English when there is no translation)."""
    table = MESSAGES[key]
    return table.get(lang, table["en"]).format(**values)
