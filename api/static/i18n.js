// Words of the console in English and Chinese: chrome, lifecycle states, card titles, reasons
// and relative times. Server texts with a known shape are translated here; the rest stay as sent.

export const I18N = {
  en: {
    "nav.dash": "Dashboard", "nav.chat": "Chat", "nav.home": "My releases", "nav.inbox": "Approvals",
    "nav.history": "History", "nav.targets": "Targets", signout: "Sign out",
    "signin.title": "Sign in", "signin.token": "API token", "signin.go": "Sign in",
    "signin.bad": "That token is unknown or revoked.", "signin.sso": "Sign in with single sign-on", "home.releases": "My releases",
    "home.chat": "Chat", "chat.placeholder": "deploy web 1.4.2 to prod", "chat.send": "Send",
    "chat.label": "Message", none: "Nothing here yet.", "inbox.title": "Approval inbox",
    project: "Project", environment: "Environment", risk: "Risk", state: "State", mine: "Mine only",
    any: "any", "inbox.approve": "Approve selected", "inbox.reject": "Reject selected",
    "inbox.again": "Tap again to confirm", "inbox.select": "Select", release: "Release",
    requested: "Requested by", steps: "Steps", "release.title": "Release", diff: "Changes",
    approvals: "Approvals", timeline: "Timeline", approve: "Approve", reject: "Reject",
    confirm: "Confirm", cancel: "Cancel", submit: "Submit", apply: "Apply",
    "targets.title": "Targets", runtime: "Runtime", services: "Services", health: "Health",
    simulated: "simulated", live: "live", offline: "reconnecting…", expires: "expires in",
    expired: "expired", "card.closed": "This card was already decided or closed.",
    "card.expired": "This card expired: re-preview the release.", decided: "decided",
    done: "Done", "lang.switch": "中文",
    "dash.title": "Dashboard", "dash.inbox": "Waiting for your approval", "dash.waiting": "waiting for approval",
    "dash.last": "Last release", "dash.noservices": "no services running", "dash.open": "Open inbox",
    "history.title": "Release history", "history.requester": "Requester", "history.requesterHint": "me or a name",
    "history.older": "Older", "history.newest": "Newest", when: "When", reason: "Reason",
    "card.movedOn": "moved on", "card.lines": "Last log lines", "card.now": "now",
    "rel.now": "just now", "rel.s": "{n} s ago", "rel.m": "{n} min ago", "rel.h": "{n} h ago", "rel.d": "{n} d ago",
    "rel.in": "in {x}",
    "title.submit": "Submit {id} for {where}?", "title.apply": "Apply {id} to {where} now?",
    "title.approval": "Approve {id} on {where}, requested by {who}?", "title.approve": "Approve {id}?",
    "title.reject": "Reject {id}?", "title.cancel": "Cancel {id}?",
    "reason.unhealthy": "{what} is unhealthy", "reason.now": "{id} is now {state}",
    "reason.expired": "the preview expired; re-preview it", "reason.abandoned": "abandoned by {who}: {why}",
    "reason.superseded": "superseded by {id}", repreview: "Re-preview", takeover: "Take over", retry: "Retry", rollback: "Roll back",
    "nav.audit": "Audit", since: "From", until: "To", filter: "Filter",
    "history.service": "Service", "history.text": "Search", "history.textHint": "id, version, reason, person",
    "audit.title": "Audit trail", "audit.actor": "Actor", "audit.action": "Action", "audit.data": "Details",
    "audit.export": "Export the whole chain (admins and auditors):", "audit.intact": "Audit chain verified: {n} events intact",
    "audit.brokenAt": "Audit chain broken at event {seq}", "audit.broken": "Audit chain does not verify",
    "audit.verifyFailed": "Could not verify the audit chain",
    "logs.link": "Logs and diagnostics", "logs.title": "Logs and diagnostics", "logs.events": "Events",
    "logs.logs": "Log lines", "logs.refresh": "Refresh", "logs.applying": "applying",
    "logs.releaseEvents": "What happened", "logs.servicesNow": "Its services now", "logs.target": "The whole target",
    "logs.unreachable": "The runtime did not answer",
    frozen: "frozen", "frozen.until": "until {until}", "frozen.by": "by {who}", "frozen.window": "window {window}",
    "reason.frozen": "{where} is frozen until {until} by {who}: {why}", "reason.deny": "{where} is in a deny window ({window}) until {until}",
    "reason.outside": "{where} is outside its change windows ({windows})",
    "reason.exportOnly": "only an admin or a member of the {group} group may export the audit stream",
    "reason.nothing": "nothing to change: the target already runs what was asked",
  },
  zh: {
    "nav.dash": "总览", "nav.chat": "对话", "nav.home": "我的发布", "nav.inbox": "审批", "nav.history": "历史",
    "nav.targets": "目标环境", signout: "退出",
    "signin.title": "登录", "signin.token": "API 令牌", "signin.go": "登录", "signin.sso": "单点登录",
    "signin.bad": "令牌无效或已吊销。", "home.releases": "我的发布", "home.chat": "对话",
    "chat.placeholder": "部署 web 1.4.2 到生产", "chat.send": "发送", "chat.label": "消息",
    none: "暂无内容。", "inbox.title": "审批收件箱", project: "项目", environment: "环境",
    risk: "风险", state: "状态", mine: "只看我的", any: "全部", "inbox.approve": "批准所选",
    "inbox.reject": "拒绝所选", "inbox.again": "再点一次确认", "inbox.select": "选择",
    release: "发布", requested: "申请人", steps: "步骤", "release.title": "发布", diff: "变更",
    approvals: "审批", timeline: "时间线", approve: "批准", reject: "拒绝", confirm: "确认",
    cancel: "取消", submit: "提交", apply: "执行", "targets.title": "目标环境", runtime: "运行时",
    services: "服务", health: "健康", simulated: "模拟", live: "已连接", offline: "重新连接中…",
    expires: "剩余", expired: "已过期", "card.closed": "这张卡片已被处理或关闭。",
    "card.expired": "卡片已过期：请重新预览。", decided: "已处理", done: "完成",
    "lang.switch": "English",
    "dash.title": "总览", "dash.inbox": "等待你审批", "dash.waiting": "等待审批", "dash.last": "最近发布",
    "dash.noservices": "没有运行中的服务", "dash.open": "打开收件箱",
    "history.title": "发布历史", "history.requester": "申请人", "history.requesterHint": "me 或用户名",
    "history.older": "更早", "history.newest": "最新", when: "时间", reason: "原因",
    "card.movedOn": "已变化", "card.lines": "最近日志", "card.now": "当前",
    "rel.now": "刚刚", "rel.s": "{n} 秒前", "rel.m": "{n} 分钟前", "rel.h": "{n} 小时前", "rel.d": "{n} 天前",
    "rel.in": "{x}后",
    "title.submit": "提交 {id}（{where}）？", "title.apply": "现在把 {id} 执行到 {where}？",
    "title.approval": "批准 {id}（{where}，申请人 {who}）？", "title.approve": "批准 {id}？",
    "title.reject": "拒绝 {id}？", "title.cancel": "取消 {id}？",
    "reason.unhealthy": "{what} 不健康", "reason.now": "{id} 现在是「{state}」",
    "reason.expired": "预览已过期，请重新预览", "reason.abandoned": "已被 {who} 放弃：{why}",
    "reason.superseded": "已被 {id} 取代", repreview: "重新预览", takeover: "接手审批", retry: "重试", rollback: "回滚",
    "nav.audit": "审计", since: "从", until: "到", filter: "筛选",
    "history.service": "服务", "history.text": "搜索", "history.textHint": "编号、版本、原因、人员",
    "audit.title": "审计记录", "audit.actor": "操作人", "audit.action": "动作", "audit.data": "详情",
    "audit.export": "导出完整审计链（管理员和审计员）：", "audit.intact": "审计链校验通过：{n} 条事件完好",
    "audit.brokenAt": "审计链在第 {seq} 条事件处断开", "audit.broken": "审计链校验未通过",
    "audit.verifyFailed": "无法校验审计链",
    "logs.link": "日志与诊断", "logs.title": "日志与诊断", "logs.events": "事件",
    "logs.logs": "日志", "logs.refresh": "刷新", "logs.applying": "正在执行",
    "logs.releaseEvents": "经过", "logs.servicesNow": "相关服务现状", "logs.target": "整个目标环境",
    "logs.unreachable": "运行时没有响应",
    frozen: "已冻结", "frozen.until": "至 {until}", "frozen.by": "由 {who}", "frozen.window": "窗口 {window}",
    "reason.frozen": "{where} 已被 {who} 冻结至 {until}：{why}", "reason.deny": "{where} 处于禁止变更窗口（{window}），至 {until}",
    "reason.outside": "{where} 不在变更窗口内（{windows}）",
    "reason.exportOnly": "只有管理员或 {group} 组成员可以导出审计记录",
    "reason.nothing": "无需变更：目标环境已经在运行所要求的版本",
  },
};

export const STATES = {
  en: {},
  zh: {
    previewed: "已预览", pending_approval: "待审批", approved: "已批准", rejected: "已拒绝",
    cancelled: "已取消", expired: "已过期", applying: "执行中", applied: "已执行", failed: "失败",
    rolling_back: "回滚中", rolled_back: "已回滚", rollback_failed: "回滚失败", pending: "待处理",
    void: "已作废", healthy: "健康", unhealthy: "不健康", starting: "启动中", absent: "不存在",
    unknown: "未知", low: "低", medium: "中", high: "高", open: "待处理", done: "已完成",
  },
};

export function fill(text, values) {
  return text.replace(/\{(\w+)\}/g, (_, key) => String(values[key] ?? ""));
}

export function translator(lang) {
  const t = (key, values) => fill((I18N[lang] && I18N[lang][key]) || I18N.en[key] || key, values || {});
  const stateName = (s) => (STATES[lang] && STATES[lang][s]) || String(s ?? "").replace(/_/g, " ");
  // Reasons the server writes in a known shape; anything else is shown as written.
  const reason = (text) => {
    if (!text || lang === "en") return text || "";
    return String(text).split("; ").map((part) => {
      let m = part.match(/^(.+) is unhealthy$/);
      if (m) return t("reason.unhealthy", { what: m[1] });
      m = part.match(/^(R-\d+) is now (\w+)$/);
      if (m) return t("reason.now", { id: m[1], state: stateName(m[2]) });
      if (part === "the preview expired; re-preview it" || part === "the preview expired") return t("reason.expired");
      m = part.match(/^abandoned by ([^:]+): (.*)$/);
      if (m) return t("reason.abandoned", { who: m[1], why: m[2] });
      m = part.match(/^superseded by (R-\d+)$/);
      if (m) return t("reason.superseded", { id: m[1] });
      m = part.match(/^(?:(R-\d+) cannot (\w+): )?(\S+) is frozen until (\S+) by ([^:]+): (.*)$/);
      if (m) return (m[1] ? `${m[1]}：` : "") + t("reason.frozen", { where: m[3], until: m[4].replace("T", " "), who: m[5], why: m[6] });
      m = part.match(/^(\S+) is in a deny window \((.+)\) until (\S+?)(?:: (.*))?$/);
      if (m) return t("reason.deny", { where: m[1], window: m[2], until: m[3].replace("T", " ") }) + (m[4] ? `：${m[4]}` : "");
      m = part.match(/^(\S+) is outside its change windows \((.+)\)$/);
      if (m) return t("reason.outside", { where: m[1], windows: m[2] });
      m = part.match(/^only an admin or a member of the (\S+) group may export the audit stream$/);
      if (m) return t("reason.exportOnly", { group: m[1] });
      if (part.startsWith("nothing to change: the target already runs what was asked")) return t("reason.nothing");
      return part;
    }).join("；");
  };
  const ago = (iso) => {
    const seconds = Math.round((Date.now() - new Date(iso)) / 1000);
    const n = Math.abs(seconds);
    const text = n < 10 ? t("rel.now") : n < 60 ? t("rel.s", { n }) : n < 3600 ? t("rel.m", { n: Math.floor(n / 60) })
      : n < 86400 ? t("rel.h", { n: Math.floor(n / 3600) }) : t("rel.d", { n: Math.floor(n / 86400) });
    return text;
  };
  return { t, stateName, reason, ago };
}
