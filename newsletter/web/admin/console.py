"""The console's frame: its words (Japanese first), its templates, and the guard
every console route goes through.

Rules kept here:

- **No route without a session.**  :func:`room` wraps every handler: without a
  live session the answer is a redirect to the sign-in page (303), whatever the
  method, and the handler never runs.
- **The role is checked on the server**, by ``users.CAN`` (the one table of who
  may do what): an action above the user's role is 403 and changes nothing.
- **Every POST carries the CSRF token** of its form (web/security.py's signed
  double-submit, the subscriber pages' rule): without it, 403 before the
  handler runs.
- Pages are rendered from ``templates/admin/`` (the project's copy first, then
  the packaged one), autoescaped; no script and no inline style, so the
  Content-Security-Policy of every page forbids both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...config import PACKAGED_TEMPLATES
from ..pages import read_form
from ..security import CSRF_FIELD
from ..service import service

if TYPE_CHECKING:
    from ..service import Service
    from .auth import Session

MAX_ID = 2**31 - 1  # row ids are 32-bit INTEGER columns on PostgreSQL
LOGIN = "/admin/login"
LOGOUT = "/admin/logout"

JA: dict[str, str] = {
    "console": "管理画面",
    "skip": "本文へ移動",
    "login_title": "ログイン",
    "username": "ユーザー名",
    "password": "パスワード",
    "login_button": "ログイン",
    "logout_button": "ログアウト",
    "login_failed": "ユーザー名またはパスワードが正しくありません。",
    "login_throttled": "ログインの試行が多すぎます。しばらく時間をおいてから、もう一度お試しください。",
    "signed_in_as": "ログイン中: {name}（{role}）",
    "home": "ホーム",
    "home_title": "管理画面ホーム",
    "home_lead": "担当する作業を選んでください。",
    "err_csrf": "フォームの有効期限が切れたか、不正な送信です。ページを開き直してから、もう一度操作してください。",
    "forbidden": "この操作を行う権限がありません。",
    "role_editor": "編集者", "role_approver": "承認者", "role_operator": "運用担当", "role_admin": "管理者",
    "articles": "記事",
    "editions": "次号の編集",
    "subscribers": "購読者",
    "sending": "配信状況",
    "audit": "操作履歴",
    "users": "ユーザー",
    "required": "必須",
    "saved": "保存しました。",
    "errors_heading": "入力内容を確認してください",
    "articles_title": "記事の一覧",
    "new_article": "記事を書く",
    "edit_article": "記事の編集",
    "filter": "絞り込む",
    "filter_status": "状態",
    "filter_field": "分野",
    "filter_embargo": "公開日時",
    "filter_q": "キーワード",
    "all": "すべて",
    "embargo_waiting": "公開前",
    "embargo_open": "公開済み",
    "st_draft": "下書き", "st_queued": "配信待ち", "st_published": "配信済み", "st_withdrawn": "取り下げ済み",
    "no_articles": "該当する記事はありません。",
    "col_id": "番号", "col_title": "タイトル", "col_status": "状態", "col_fields": "分野",
    "col_publish_at": "公開日時", "col_priority": "優先度",
    "title": "タイトル",
    "url": "URL",
    "summary": "概要",
    "body": "本文",
    "body_hint": "Markdown で書けます。「プレビュー」を押すと、保存せずに表示を確かめられます。",
    "fields": "分野",
    "publish_at": "公開日時",
    "publish_at_hint": "この日時より前の号には入りません（空欄ならすぐ）。時刻は{tz}です。",
    "priority": "優先度",
    "priority_hint": "大きいほど前に載ります。",
    "pinned": "固定（分野の先頭に載せる）",
    "draft": "下書きとして保存（次号に入れない）",
    "save": "保存",
    "withdraw": "取り下げ",
    "withdraw_hint": "取り下げた記事は、まだ配信していない号から外れます。",
    "withdrawn_notice": "記事を取り下げました。",
    "preview": "本文のプレビュー",
    "not_editable": "この記事は{status}のため、編集できません。",
    "back_to_list": "記事の一覧へ戻る",
    "err_publication": "メールマガジンを選んでください。",
    "editions_title": "次号の編集",
    "new_draft": "次号の下書きを作る",
    "no_unsent": "まだ配信していない号はありません。",
    "nothing_new": "{pub}: 次号に入れられる記事がありません（配信待ちで公開日時を過ぎた記事がありません）。",
    "edition_label": "第{number}号",
    "est_draft": "下書き", "est_approved": "承認済み", "est_scheduled": "予約済み", "est_sending": "配信中",
    "est_paused": "一時停止", "est_done": "配信完了", "est_cancelled": "中止",
    "n_articles": "記事 {n} 件",
    "open": "開く",
    "articles_in_order": "掲載する記事（掲載順）",
    "move_up": "上へ",
    "move_down": "下へ",
    "remove": "外す",
    "add_from_queue": "配信待ちの記事から追加",
    "article_to_add": "追加する記事",
    "add": "追加",
    "queue_empty": "追加できる記事はありません。",
    "texts_heading": "件名・巻頭言・編集後記",
    "subject": "件名",
    "subject_hint": "空欄なら「{default}」になります。",
    "lead": "巻頭言",
    "afterword": "編集後記",
    "texts_hint": "Markdown で書けます。",
    "previews": "プレビュー",
    "variant": "{fields}・{format}・{charset}（読者 {n} 人）",
    "desktop": "パソコン幅",
    "phone": "スマートフォン幅",
    "text_part": "テキスト版",
    "preflight": "配信前チェック",
    "no_findings": "問題は見つかりませんでした。",
    "sev_error": "エラー", "sev_warning": "注意", "sev_info": "情報",
    "test_heading": "テスト送信",
    "test_hint": "あなたのアドレス（{email}）に、この号を1通だけ送ります。購読者には送られません。",
    "test_variant": "送る版",
    "test_button": "テスト送信",
    "approve_heading": "承認・予約配信",
    "approve_hint": "このページで確認した内容（内容ID {hash}）を承認します。",
    "approve_button": "承認",
    "unapprove_button": "承認を取り消す",
    "schedule_at": "配信日時（{tz}）",
    "schedule_button": "予約配信",
    "unschedule_button": "予約を取り消す",
    "cancel_heading": "この号を破棄",
    "cancel_button": "破棄する",
    "scheduled_for": "配信予定: {at}",
    "history": "この号の操作履歴",
    "done_texts": "件名・巻頭言・編集後記を保存しました。",
    "done_add": "記事を追加しました。",
    "done_remove": "記事を外しました。",
    "done_move": "掲載順を変えました。",
    "done_test": "テストメールを送りました。",
    "done_approve": "承認しました。",
    "done_unapprove": "承認を取り消しました。下書きに戻りました。",
    "done_schedule": "予約しました。",
    "done_unschedule": "予約を取り消しました。",
    "done_cancel": "この号を破棄しました。",
    "err_upload": "ファイルを読み取れませんでした。CSV ファイルを選んで、もう一度送信してください。",
    "import_title": "購読者の取り込み（CSV）",
    "import_file": "CSV ファイル",
    "import_hint": "まず内容を確認します（まだ何も登録されません）。列: メールアドレス、名前、分野、形式。",
    "import_check": "内容を確認する",
    "import_report": "確認の結果",
    "import_counts": "{rows} 行: 新規 {created} 人、更新 {updated} 人、エラー {rejected} 行",
    "import_problems": "取り込めない行",
    "import_warnings": "注意",
    "import_commit": "取り込む",
    "import_commit_hint": "エラーの行は取り込まれません。",
    "import_done": "取り込みました: 新規 {created} 人、更新 {updated} 人。",
    "import_expired": "確認したファイルが見つかりません。もう一度ファイルを選んでください。",
    "import_link": "CSV から取り込む",
    "sending_title": "配信状況",
    "col_edition": "号", "col_sent": "送信済み", "col_pending": "送信待ち", "col_failed": "失敗",
    "col_skipped": "対象外", "col_cancelled": "取り消し",
    "no_editions": "まだ号がありません。",
    "rate": "送信速度: 毎秒 {rate:.1f} 通",
    "eta": "終了見込み: {at}",
    "pause_button": "一時停止", "resume_button": "再開", "cancel_send_button": "配信を中止",
    "cancel_send_hint": "中止すると、送信待ちのメールは送られません。元に戻せません。",
    "failures": "送信できなかったメール",
    "no_failures": "送信できなかったメールはありません。",
    "col_address": "アドレス", "col_reason": "理由", "col_attempts": "試行回数", "col_last_try": "最終試行",
    "col_retry": "再送",
    "retryable": "再送できます", "not_retryable": "再送しません: {why}",
    "retry_button": "再送（{n} 件）",
    "done_pause": "一時停止しました。", "done_resume": "再開しました。",
    "done_retry": "再送の対象を送信待ちに戻しました。",
    "subscribers_title": "購読者",
    "filter_format": "形式",
    "sub_q": "アドレス・名前",
    "n_found": "{total} 人（最大 {shown} 人を表示）",
    "col_name": "名前", "col_format": "形式", "col_created": "登録日時",
    "sst_active": "配信中", "sst_pending": "確認待ち", "sst_unsubscribed": "配信停止",
    "sst_bounced": "配信不能", "sst_complained": "迷惑メール報告",
    "export_heading": "書き出し（Excel 用 CSV）",
    "export_status": "書き出す状態",
    "export_button": "CSV を書き出す",
    "export_hint": "書き出しは操作履歴に記録されます。",
    "no_subscribers": "該当する購読者はいません。",
    "subscriber_title": "購読者の詳細",
    "consents": "同意の記録",
    "col_event": "出来事", "col_at": "日時", "col_source": "経路", "col_ip": "IPアドレス", "col_detail": "詳細",
    "suppress_heading": "配信停止",
    "suppress_reason": "停止の理由",
    "suppress_hint": "理由は同意の記録に残ります（例: 本人から電話で依頼）。",
    "suppress_button": "配信停止",
    "err_reason": "停止の理由を入力してください。",
    "done_suppress": "配信を停止しました。",
    "already_suppressed": "このアドレスへの配信は停止しています。",
    "audit_title": "操作履歴",
    "filter_actor": "ユーザー", "filter_action": "操作", "filter_interface": "経路",
    "filter_publication": "メールマガジン",
    "col_actor": "ユーザー", "col_action": "操作", "col_interface": "経路", "col_publication": "メールマガジン",
    "no_audit": "該当する記録はありません。",
    "users_title": "ユーザー",
    "col_role": "役割", "col_state": "状態", "col_email": "メールアドレス", "col_actions": "操作",
    "state_active": "有効", "state_disabled": "無効",
    "add_user": "ユーザーを追加",
    "user_name": "ユーザー名", "user_name_hint": "半角英数字と . _ - （ログインと操作履歴に使います）",
    "user_email": "メールアドレス", "user_role": "役割",
    "user_password": "初期パスワード", "user_password_hint": "10文字以上。本人に別の方法で伝えてください。",
    "add_user_button": "追加",
    "disable_button": "無効にする",
    "logout_user_button": "ログイン中の画面をすべて終了",
    "done_user_add": "ユーザーを追加しました。", "done_user_disable": "ユーザーを無効にしました。",
    "done_user_logout": "そのユーザーのログインをすべて終了しました。",
    # -- room (helper "room"): schedules, re-activation, live progress, reading statistics, audit dates
    "schedules": "配信予定",
    "schedules_title": "配信予定",
    "schedules_lead": "各メールマガジンの定期配信の予定です。祝日・休業日による移動や見送りも表示します。",
    "sched_when": "配信の予定", "sched_cron": "設定（cron）", "sched_holiday": "祝日・休業日",
    "holiday_send": "そのまま配信", "holiday_skip": "配信しない（見送り）",
    "holiday_next_business_day": "翌営業日の同じ時刻に配信",
    "sched_active": "有効", "sched_paused": "一時停止中", "sched_since": "{at} から",
    "sched_next": "次の配信予定", "sched_none": "予定はありません。",
    "slot_skipped": "見送り: {reason}", "slot_moved": "（{at} から移動: {reason}）",
    "slot_paused": "（一時停止中のため配信されません）",
    "sched_last": "前回の実行", "sched_never": "まだ実行されていません。",
    "sched_pause_hint": "一時停止中は定期配信の号を作りません（配信中の号はそのまま続きます）。",
    "sched_resume_hint": "再開すると、次の予定から配信します（止めていた間の分はさかのぼりません）。",
    "done_schedule_pause": "定期配信を一時停止しました。", "done_schedule_resume": "定期配信を再開しました。",
    "reactivate_heading": "配信再開",
    "reactivate_reason": "再開の理由",
    "reactivate_hint": "理由は同意の記録に残ります（例: 本人から電話で再開の依頼。"
                       "確認した日時と方法も書いてください）。",
    "reactivate_button": "配信再開",
    "err_reactivate_reason": "再開の理由を入力してください。",
    "reactivate_refused_complaint": "迷惑メールとして報告した方には、管理画面から配信を再開できません。"
                                    "本人に配信登録ページから登録し直してもらってください。",
    "reactivate_not_needed": "この方は配信中か確認待ちのため、再開の操作はありません。",
    "done_reactivate": "配信を再開しました。",
    "col_deferred": "再試行待ち",
    "progress_heading": "送信の進み具合",
    "rate_per_min": "送信速度: 毎分 {rate} 通（直近 {minutes} 分）",
    "rate_none": "送信速度: 直近 {minutes} 分の送信はありません",
    "eta_at": "終了見込み: {at}",
    "next_retry": "次の再試行: {at}",
    "refresh": "更新",
    "updated_at": "{at} 時点",
    "live_summary": "{status}: 送信済み {sent}、送信待ち {pending}、再試行待ち {deferred}、失敗 {failed}",
    "bounces_heading": "バウンス・苦情",
    "bounce_at_send": "宛先不明（送信時）",
    "bounce_after": "バウンス（後から届いた通知）",
    "complaints_after": "迷惑メール報告",
    "bounce_note": "送信後に届いた通知は、この号を受け取った方の分を数えています。",
    "report_link": "閲読の統計",
    "report_title": "閲読の統計",
    "report_lead": "数字はすべて集計値です。個々の購読者の閲読は表示しません。",
    "report_tracking": "計測の設定: {mode}",
    "tracking_off": "計測しない", "tracking_aggregate": "集計のみ", "tracking_per-subscriber": "購読者ごと",
    "rep_delivered": "配信数", "rep_bounced": "配信できなかった数", "rep_unsubscribed": "その後の配信停止",
    "rep_opens_human": "開封（人）", "rep_opens_proxy": "うちメールサービス経由", "rep_opens_machine": "開封（機械）",
    "rep_opens_unknown": "開封を計れない（テキスト版）", "rep_open_rate": "開封率（人・HTML版）",
    "rep_clicks_human": "クリック（人）", "rep_clicks_machine": "クリック（機械）",
    "rep_click_rate": "クリック率（人）",
    "rep_articles": "記事ごとのクリック", "rep_fields": "分野ごとのクリック",
    "col_human": "人", "col_machine": "機械（自動巡回など）",
    "rep_hours": "48時間の推移",
    "rep_hours_alt": "配信から48時間の、人による開封とクリックの推移のグラフ",
    "rep_hours_legend": "1時間ごとの件数。濃い青の棒: 人による開封、赤の棒: 人によるクリック、"
                        "灰色の細い線: 機械によるもの。",
    "rep_csv_button": "記事ごとのクリックを CSV で書き出す",
    "rep_csv_hint": "書き出しは操作履歴に記録されます。",
    "rep_no_tracking": "この号は計測していません（tracking = \"off\"）。配信数だけを表示しています。",
    "filter_from": "期間（開始日）", "filter_to": "期間（終了日）",
    "err_date": "日付は 2026-12-01 の形で入力してください。",
    "err_date_order": "終了日は開始日より後にしてください。",
    "iface_cli": "コマンド", "iface_daemon": "自動配信", "iface_console": "管理画面", "iface_delivery": "配信処理",
    # -- desk (issue 14): 承認依頼, 配信前チェック on demand, article preview and import
    "est_waiting": "承認待ち",
    "request_heading": "承認依頼",
    "request_hint": "内容を確かめ終えたら、承認者に承認を依頼します。"
                    "依頼の後でこの号を変更すると（載せている記事の編集を含む）、"
                    "依頼は自動で取り下げられます。",
    "request_button": "承認を依頼",
    "waiting_since": "承認待ち: {who} が {at} に依頼しました。",
    "waiting_hint": "この号を変更すると依頼は取り下げられます。変更した後は、もう一度依頼してください。",
    "withdraw_request_button": "承認依頼を取り下げる",
    "done_request": "承認を依頼しました。承認者のホーム画面に「承認待ち」として表示されます。",
    "done_withdraw_request": "承認依頼を取り下げました。",
    "awaiting_heading": "承認待ちの号",
    "awaiting_item": "{pub} 第{number}号（{who} が {at} に依頼）",
    "awaiting_none": "承認待ちの号はありません。",
    "preflight_not_run": "まだ実行していません。",
    "preflight_hint": "すべての版を作り、リンク・文字化け・件名の長さ・配信停止リンクなどを確かめます。"
                      "読者が多いと時間がかかります。"
                      "承認するときにも自動で行います。",
    "preflight_button": "配信前チェック",
    "err_preflight": "配信前チェックでエラーが見つかったため、承認していません。"
                     "下の「配信前チェック」の結果を直してから、"
                     "もう一度承認してください。",
    "err_not_unsent": "配信を始めた号は、ここではチェックできません。",
    "preview_button": "プレビュー",
    "preview_button_hint": "「プレビュー」は保存せずに、本文の表示を下に示します。",
    "preview_notice": "プレビューを表示しています。まだ保存していません。",
    "request_article_button": "承認依頼",
    "request_article_hint_some": "「承認依頼」を押すと、保存してから、"
                                 "この記事を載せる号（下の「掲載予定の号」）の承認を依頼します。",
    "request_article_hint_none": "承認は号（メールマガジン1回分）ごとに行います。"
                                 "この記事はまだどの号にも入っていないため、"
                                 "「承認依頼」を押しても保存だけになります。",
    "requested_notice": "保存して、次の号の承認を依頼しました。",
    "requested_other": "保存しました。この記事を載せる号は承認待ちか承認済みのため、新しく依頼はしていません"
                       "（下の「掲載予定の号」をご覧ください）。",
    "requested_none": "保存しました。この記事はまだどの号の下書きにも入っていないため、承認依頼はしていません。"
                      "承認は号（メールマガジン1回分）ごとに行います。「次号の編集」で下書きを作るか、"
                      "下書きにこの記事を追加してから、"
                      "その号のページで「承認を依頼」を押してください。",
    "carriers_heading": "掲載予定の号",
    "carriers_none": "この記事はまだどの号の下書きにも入っていません。",
    "carrier_label": "{pub} 第{number}号",
    "aimport_link": "ファイルから取り込む",
    "aimport_title": "記事の取り込み（ファイル）",
    "aimport_file": "ファイル（CSV・JSON・RSS/Atom・Markdown）",
    "aimport_hint": "まず内容を確認します（まだ何も登録されません）。形式はコマンドの「newsletter article "
                    "import」と同じです。",
    "aimport_fields": "分野が書かれていない項目に付ける分野",
    "aimport_fields_hint": "RSS の記事など、分野のない項目にだけ付けます（選ばなければ、その項目は取り込めません）。",
    "aimport_counts": "{total} 件: 新規 {created} 件、更新 {updated} 件、変更なし {unchanged} 件、取り込めない "
                      "{refused} 件",
    "aimport_caption": "項目ごとの結果",
    "aimport_result": "取り込みの結果",
    "aimport_more": "最初の {n} 件を表示しています。",
    "aimport_commit_hint": "「取り込めない」項目は取り込まれません。残りを一度にまとめて取り込みます。",
    "aimport_done": "取り込みました: 新規 {created} 件、更新 {updated} 件。",
    "aimport_nothing": "新しく取り込む項目も、更新する項目もありません。",
    "err_article_upload": "ファイルを読み取れませんでした。CSV・JSON・RSS/Atom・Markdown のファイルを選んで、"
                          "もう一度送信してください。",
    "col_where": "行・項目", "col_result": "結果",
    "act_created": "新規", "act_updated": "更新", "act_unchanged": "変更なし", "act_refused": "取り込めない",
    # The audit log's actions (stored in English, the command line's words), shown in the console.
    "audit_created": "作成",
    "audit_not created": "作成せず",
    "audit_article added": "記事を追加",
    "audit_article removed": "記事を外す",
    "audit_reordered": "記事の順番を変更",
    "audit_texts set": "件名・巻頭言・編集後記を変更",
    "audit_refreshed": "内容を更新",
    "audit_approval requested": "承認を依頼",
    "audit_request withdrawn": "承認依頼を取り下げ",
    "audit_approved": "承認",
    "audit_approval dropped": "変更により承認を解除",
    "audit_unapproved": "承認を取り消し",
    "audit_scheduled": "予約配信を設定",
    "audit_unscheduled": "予約を取り消し",
    "audit_schedule missed": "予約時刻に配信できず",
    "audit_held back": "配信を保留",
    "audit_sending": "配信開始",
    "audit_paused": "一時停止",
    "audit_resumed": "再開",
    "audit_cancelled": "中止",
    "audit_finished": "配信完了",
    "audit_reopened": "再送のため再開",
    "audit_retried": "再送",
    "audit_signed in": "ログイン",
    "audit_signed out": "ログアウト",
    "audit_imported": "取り込み",
    "audit_exported": "書き出し",
    "audit_report exported": "レポートを書き出し",
    "audit_subscriber reactivated": "購読を再開",
    "audit_schedule paused": "配信予定を一時停止",
    "audit_schedule resumed": "配信予定を再開",
}

EN: dict[str, str] = {
    "console": "Console",
    "skip": "Skip to content",
    "login_title": "Sign in",
    "username": "User name",
    "password": "Password",
    "login_button": "Sign in",
    "logout_button": "Sign out",
    "login_failed": "The user name or password is not correct.",
    "login_throttled": "Too many sign-in attempts. Please wait a while and try again.",
    "signed_in_as": "Signed in: {name} ({role})",
    "home": "Home",
    "home_title": "Console home",
    "home_lead": "Choose what to work on.",
    "err_csrf": "The form expired or was not sent from this site. Open the page again and retry.",
    "forbidden": "You do not have permission for this action.",
    "role_editor": "editor", "role_approver": "approver", "role_operator": "operator", "role_admin": "admin",
    "articles": "Articles",
    "editions": "Next edition",
    "subscribers": "Subscribers",
    "sending": "Sending",
    "audit": "Audit log",
    "users": "Users",
    "required": "required",
    "saved": "Saved.",
    "errors_heading": "Please check your input",
    "articles_title": "Articles",
    "new_article": "Write an article",
    "edit_article": "Edit article",
    "filter": "Filter",
    "filter_status": "State",
    "filter_field": "Field",
    "filter_embargo": "Embargo",
    "filter_q": "Keyword",
    "all": "All",
    "embargo_waiting": "Not yet public",
    "embargo_open": "Public",
    "st_draft": "draft", "st_queued": "queued", "st_published": "published", "st_withdrawn": "withdrawn",
    "no_articles": "No articles match.",
    "col_id": "No.", "col_title": "Title", "col_status": "State", "col_fields": "Fields",
    "col_publish_at": "Embargo", "col_priority": "Priority",
    "title": "Title",
    "url": "URL",
    "summary": "Summary",
    "body": "Body",
    "body_hint": "Markdown. Press Preview to see it rendered without saving.",
    "fields": "Fields",
    "publish_at": "Embargo until",
    "publish_at_hint": "Not in an edition before this time (empty: at once). Time zone: {tz}.",
    "priority": "Priority",
    "priority_hint": "Higher comes first.",
    "pinned": "Pinned (first in its field)",
    "draft": "Save as draft (keep out of the next edition)",
    "save": "Save",
    "withdraw": "Withdraw",
    "withdraw_hint": "A withdrawn article leaves every edition not yet sent.",
    "withdrawn_notice": "The article was withdrawn.",
    "preview": "Preview of the body",
    "not_editable": "This article is {status} and cannot be edited.",
    "back_to_list": "Back to the articles",
    "err_publication": "Choose a publication.",
    "editions_title": "Next edition",
    "new_draft": "Create the next draft",
    "no_unsent": "No unsent edition.",
    "nothing_new": "{pub}: nothing to put in a new edition (no queued article past its embargo).",
    "edition_label": "No. {number}",
    "est_draft": "draft", "est_approved": "approved", "est_scheduled": "scheduled", "est_sending": "sending",
    "est_paused": "paused", "est_done": "done", "est_cancelled": "cancelled",
    "n_articles": "{n} articles",
    "open": "Open",
    "articles_in_order": "Articles, in order",
    "move_up": "Up",
    "move_down": "Down",
    "remove": "Remove",
    "add_from_queue": "Add from the queue",
    "article_to_add": "Article to add",
    "add": "Add",
    "queue_empty": "No article to add.",
    "texts_heading": "Subject, lead and afterword",
    "subject": "Subject",
    "subject_hint": "Empty: \u201c{default}\u201d.",
    "lead": "Lead",
    "afterword": "Afterword",
    "texts_hint": "Markdown.",
    "previews": "Previews",
    "variant": "{fields} / {format} / {charset} ({n} readers)",
    "desktop": "Desktop width",
    "phone": "Phone width",
    "text_part": "Text part",
    "preflight": "Preflight check",
    "no_findings": "Nothing found.",
    "sev_error": "Error", "sev_warning": "Warning", "sev_info": "Info",
    "test_heading": "Test message",
    "test_hint": "Sends one message of this edition to your address ({email}); no subscriber gets it.",
    "test_variant": "Variant",
    "test_button": "Send test",
    "approve_heading": "Approve and schedule",
    "approve_hint": "Approves the content shown on this page (content id {hash}).",
    "approve_button": "Approve",
    "unapprove_button": "Withdraw approval",
    "schedule_at": "Send at ({tz})",
    "schedule_button": "Schedule",
    "unschedule_button": "Unschedule",
    "cancel_heading": "Discard this edition",
    "cancel_button": "Discard",
    "scheduled_for": "Scheduled for {at}",
    "history": "History of this edition",
    "done_texts": "Saved.",
    "done_add": "Article added.",
    "done_remove": "Article removed.",
    "done_move": "Order changed.",
    "done_test": "Test message sent.",
    "done_approve": "Approved.",
    "done_unapprove": "Approval withdrawn; it is a draft again.",
    "done_schedule": "Scheduled.",
    "done_unschedule": "Unscheduled.",
    "done_cancel": "Edition discarded.",
    "err_upload": "The file could not be read. Choose a CSV file and send it again.",
    "import_title": "Import subscribers (CSV)",
    "import_file": "CSV file",
    "import_hint": "First the file is checked (nothing is written yet). Columns: email, name, fields, format.",
    "import_check": "Check the file",
    "import_report": "Check result",
    "import_counts": "{rows} rows: {created} new, {updated} updated, {rejected} with errors",
    "import_problems": "Rows that cannot be imported",
    "import_warnings": "Warnings",
    "import_commit": "Import",
    "import_commit_hint": "Rows with errors are left out.",
    "import_done": "Imported: {created} new, {updated} updated.",
    "import_expired": "The checked file is gone. Choose the file again.",
    "import_link": "Import from CSV",
    "sending_title": "Sending",
    "col_edition": "Edition", "col_sent": "Sent", "col_pending": "Pending", "col_failed": "Failed",
    "col_skipped": "Skipped", "col_cancelled": "Cancelled",
    "no_editions": "No editions yet.",
    "rate": "Rate: {rate:.1f} messages a second",
    "eta": "Expected to finish: {at}",
    "pause_button": "Pause", "resume_button": "Resume", "cancel_send_button": "Cancel sending",
    "cancel_send_hint": "Pending messages will never be sent. This cannot be undone.",
    "failures": "Failed deliveries",
    "no_failures": "No failed deliveries.",
    "col_address": "Address", "col_reason": "Reason", "col_attempts": "Attempts", "col_last_try": "Last try",
    "col_retry": "Retry",
    "retryable": "retryable", "not_retryable": "not retried: {why}",
    "retry_button": "Retry ({n})",
    "done_pause": "Paused.", "done_resume": "Resumed.",
    "done_retry": "The retryable failures are pending again.",
    "subscribers_title": "Subscribers",
    "filter_format": "Format",
    "sub_q": "Address or name",
    "n_found": "{total} found (up to {shown} shown)",
    "col_name": "Name", "col_format": "Format", "col_created": "Since",
    "sst_active": "active", "sst_pending": "pending", "sst_unsubscribed": "unsubscribed",
    "sst_bounced": "bounced", "sst_complained": "complained",
    "export_heading": "Export (CSV for Excel)",
    "export_status": "State to export",
    "export_button": "Export CSV",
    "export_hint": "Every export is recorded in the audit log.",
    "no_subscribers": "No subscribers match.",
    "subscriber_title": "Subscriber",
    "consents": "Consent history",
    "col_event": "Event", "col_at": "When", "col_source": "Source", "col_ip": "IP address", "col_detail": "Detail",
    "suppress_heading": "Stop mail",
    "suppress_reason": "Reason",
    "suppress_hint": "Kept in the consent history (e.g. asked by phone).",
    "suppress_button": "Stop mail",
    "err_reason": "Give the reason.",
    "done_suppress": "Mail to this address is stopped.",
    "already_suppressed": "Mail to this address is stopped.",
    "audit_title": "Audit log",
    "filter_actor": "User", "filter_action": "Action", "filter_interface": "Interface",
    "filter_publication": "Publication",
    "col_actor": "User", "col_action": "Action", "col_interface": "Interface", "col_publication": "Publication",
    "no_audit": "Nothing recorded matches.",
    "users_title": "Users",
    "col_role": "Role", "col_state": "State", "col_email": "Email", "col_actions": "Actions",
    "state_active": "active", "state_disabled": "disabled",
    "add_user": "Add a user",
    "user_name": "User name", "user_name_hint": "Letters, digits, . _ - (used to sign in and in the audit log)",
    "user_email": "Email", "user_role": "Role",
    "user_password": "First password", "user_password_hint": "At least 10 characters; tell the user another way.",
    "add_user_button": "Add",
    "disable_button": "Disable",
    "logout_user_button": "End all their sessions",
    "done_user_add": "User added.", "done_user_disable": "User disabled.",
    "done_user_logout": "All their sessions ended.",
    # -- room (helper "room"): schedules, re-activation, live progress, reading statistics, audit dates
    "schedules": "Schedules",
    "schedules_title": "Schedules",
    "schedules_lead": "When each publication goes out, with the moves and skips of holidays and closed days.",
    "sched_when": "When", "sched_cron": "Setting (cron)", "sched_holiday": "Holidays and closed days",
    "holiday_send": "sent as planned", "holiday_skip": "not sent (skipped)",
    "holiday_next_business_day": "moved to the next business day, same time",
    "sched_active": "active", "sched_paused": "paused", "sched_since": "since {at}",
    "sched_next": "Next runs", "sched_none": "Nothing planned.",
    "slot_skipped": "skipped: {reason}", "slot_moved": "(moved from {at}: {reason})",
    "slot_paused": "(not sent while paused)",
    "sched_last": "Last run", "sched_never": "Not run yet.",
    "sched_pause_hint": "While paused no edition is made on schedule (a send in progress goes on).",
    "sched_resume_hint": "Resuming sends from the next run on (runs missed while paused are not caught up).",
    "done_schedule_pause": "The schedule is paused.", "done_schedule_resume": "The schedule is running again.",
    "reactivate_heading": "Resume mail",
    "reactivate_reason": "Reason for resuming",
    "reactivate_hint": "Kept in the consent history (e.g. asked by phone; say when and how you checked).",
    "reactivate_button": "Resume mail",
    "err_reactivate_reason": "Give the reason.",
    "reactivate_refused_complaint": "Mail to someone who reported it as spam cannot be resumed here; they can "
                                    "sign up again on the sign-up page.",
    "reactivate_not_needed": "This subscriber is active or pending: nothing to resume.",
    "done_reactivate": "Mail to this address is resumed.",
    "col_deferred": "Waiting to retry",
    "progress_heading": "Progress",
    "rate_per_min": "Rate: {rate} messages a minute (last {minutes} minutes)",
    "rate_none": "Rate: nothing sent in the last {minutes} minutes",
    "eta_at": "Expected to finish: {at}",
    "next_retry": "Next retry: {at}",
    "refresh": "Refresh",
    "updated_at": "as of {at}",
    "live_summary": "{status}: sent {sent}, pending {pending}, waiting to retry {deferred}, failed {failed}",
    "bounces_heading": "Bounces and complaints",
    "bounce_at_send": "Bad address (when sending)",
    "bounce_after": "Bounces (reported later)",
    "complaints_after": "Spam complaints",
    "bounce_note": "Reports that came after sending are counted for the people this edition was sent to.",
    "report_link": "Reading statistics",
    "report_title": "Reading statistics",
    "report_lead": "Every figure is an aggregate; nothing is shown per subscriber.",
    "report_tracking": "Tracking: {mode}",
    "tracking_off": "off", "tracking_aggregate": "aggregate", "tracking_per-subscriber": "per subscriber",
    "rep_delivered": "Delivered", "rep_bounced": "Not delivered", "rep_unsubscribed": "Unsubscribed after",
    "rep_opens_human": "Opens (people)", "rep_opens_proxy": "of which through a mail service",
    "rep_opens_machine": "Opens (machines)", "rep_opens_unknown": "Cannot be measured (text only)",
    "rep_open_rate": "Open rate (people, HTML)",
    "rep_clicks_human": "Clicks (people)", "rep_clicks_machine": "Clicks (machines)",
    "rep_click_rate": "Click rate (people)",
    "rep_articles": "Clicks by article", "rep_fields": "Clicks by field",
    "col_human": "People", "col_machine": "Machines (scanners etc.)",
    "rep_hours": "The first 48 hours",
    "rep_hours_alt": "Chart of opens and clicks by people in the 48 hours after sending",
    "rep_hours_legend": "Events per hour. Dark blue bars: opens by people; red bars: clicks by people; "
                        "thin grey lines: machines.",
    "rep_csv_button": "Download clicks by article (CSV)",
    "rep_csv_hint": "Every download is recorded in the audit log.",
    "rep_no_tracking": "This edition is not tracked (tracking = \"off\"); only deliveries are shown.",
    "filter_from": "From (date)", "filter_to": "To (date)",
    "err_date": "Write the date as 2026-12-01.",
    "err_date_order": "The end date must not be before the start date.",
    "iface_cli": "command line", "iface_daemon": "scheduler", "iface_console": "console", "iface_delivery": "delivery",
    # -- desk (issue 14): request for approval, preflight on demand, article preview and import
    "est_waiting": "waiting for approval",
    "request_heading": "Ask for approval",
    "request_hint": "When the draft is ready, ask an approver to approve it. Any change to this edition after the "
                    "request (an article it carries edited, too) withdraws the request.",
    "request_button": "Ask for approval",
    "waiting_since": "Waiting for approval: asked by {who} at {at}.",
    "waiting_hint": "Changing this edition withdraws the request; ask again after the change.",
    "withdraw_request_button": "Withdraw the request",
    "done_request": "Approval requested. Approvers see it as waiting on their home page.",
    "done_withdraw_request": "The request for approval was withdrawn.",
    "awaiting_heading": "Waiting for approval",
    "awaiting_item": "{pub} No. {number} (asked by {who} at {at})",
    "awaiting_none": "Nothing is waiting for approval.",
    "preflight_not_run": "Not run yet.",
    "preflight_hint": "Renders every variant and checks links, characters, subject length, unsubscribe links and "
                      "more. Takes a while with many readers. It also runs before an approval.",
    "preflight_button": "Run the preflight check",
    "err_preflight": "The preflight check found errors, so the edition was not approved. Fix what it lists below, "
                     "then approve again.",
    "err_not_unsent": "An edition that has started sending cannot be checked here.",
    "preview_button": "Preview",
    "preview_button_hint": "Preview shows the body rendered below, without saving.",
    "preview_notice": "This is a preview; nothing is saved yet.",
    "request_article_button": "Request approval",
    "request_article_hint_some": "Request approval saves the article, then asks for approval of the "
                                 "editions carrying it (listed below).",
    "request_article_hint_none": "Approval is given to an edition. This article is in no edition yet, so Request "
                                 "approval only saves it.",
    "requested_notice": "Saved, and approval requested for:",
    "requested_other": "Saved. The editions carrying it are already waiting or approved, so nothing new was asked "
                       "(see below).",
    "requested_none": "Saved. This article is in no draft edition yet, so no approval was requested: approval is "
                      "given to an edition. Create the next draft (or add this article to one) under Next edition, "
                      "then ask for approval on that edition's page.",
    "carriers_heading": "Editions carrying it",
    "carriers_none": "This article is in no draft edition yet.",
    "carrier_label": "{pub} No. {number}",
    "aimport_link": "Import from a file",
    "aimport_title": "Import articles (file)",
    "aimport_file": "File (CSV, JSON, RSS/Atom, Markdown)",
    "aimport_hint": "First the file is checked (nothing is written yet). The formats of 'newsletter article import'.",
    "aimport_fields": "Fields for items that name none",
    "aimport_fields_hint": "Given only to items without fields, such as feed entries (without one they are refused).",
    "aimport_counts": "{total} items: {created} new, {updated} updated, {unchanged} unchanged, {refused} refused",
    "aimport_caption": "Result per item",
    "aimport_result": "Import result",
    "aimport_more": "The first {n} items are shown.",
    "aimport_commit_hint": "Refused items are left out; the rest are imported together.",
    "aimport_done": "Imported: {created} new, {updated} updated.",
    "aimport_nothing": "Nothing new and nothing to update.",
    "err_article_upload": "The file could not be read. Choose a CSV, JSON, RSS/Atom or Markdown file and send it "
                          "again.",
    "col_where": "Row / item", "col_result": "Result",
    "act_created": "new", "act_updated": "updated", "act_unchanged": "unchanged", "act_refused": "refused",
    # The audit log's actions (stored in English, the command line's words), shown in the console.
    "audit_created": "created",
    "audit_not created": "not created",
    "audit_article added": "article added",
    "audit_article removed": "article removed",
    "audit_reordered": "reordered",
    "audit_texts set": "texts set",
    "audit_refreshed": "refreshed",
    "audit_approval requested": "approval requested",
    "audit_request withdrawn": "request withdrawn",
    "audit_approved": "approved",
    "audit_approval dropped": "approval dropped",
    "audit_unapproved": "unapproved",
    "audit_scheduled": "scheduled",
    "audit_unscheduled": "unscheduled",
    "audit_schedule missed": "schedule missed",
    "audit_held back": "held back",
    "audit_sending": "sending",
    "audit_paused": "paused",
    "audit_resumed": "resumed",
    "audit_cancelled": "cancelled",
    "audit_finished": "finished",
    "audit_reopened": "reopened",
    "audit_retried": "retried",
    "audit_signed in": "signed in",
    "audit_signed out": "signed out",
    "audit_imported": "imported",
    "audit_exported": "exported",
    "audit_report exported": "report exported",
    "audit_subscriber reactivated": "subscriber reactivated",
    "audit_schedule paused": "schedule paused",
    "audit_schedule resumed": "schedule resumed",
}


def words(lang: str) -> dict[str, str]:
    return EN if lang == "en" else JA


# The rooms on the home page and in the navigation: (key, path, users.CAN permission).
ROOMS = (
    ("articles", "/admin/articles", "edit"),
    ("editions", "/admin/editions", "edit"),
    ("subscribers", "/admin/subscribers", "subscribers"),
    ("sending", "/admin/sending", "operate"),
    ("schedules", "/admin/schedules", "operate"),
    ("audit", "/admin/audit", "audit"),
    ("users", "/admin/users", "users"),
)


def _localtime(dt: datetime | None, tz: str) -> str:
    return "" if dt is None else dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def environment(svc: Service) -> jinja2.Environment:
    env = svc.cache.get("admin_env")
    if env is None:
        own = svc.config.templates_dir / "admin"
        loaders = [jinja2.FileSystemLoader(str(own))] if own.is_dir() else []
        loaders.append(jinja2.FileSystemLoader(str(PACKAGED_TEMPLATES / "admin")))
        env = svc.cache["admin_env"] = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders), autoescape=True, undefined=jinja2.StrictUndefined)
        env.filters["localtime"] = _localtime
    return env


def render(request: Request, template: str, *, session: Session | None, forms: dict[str, str] | None = None,
           status: int = 200, **ctx: Any) -> HTMLResponse:
    """A console page.  ``forms``: form name → the path it posts to; the page gets
    ``csrf[name]`` for each (and the sign-out form's when signed in)."""
    svc = service(request)
    forms = dict(forms or {})
    if session is not None:
        forms["logout"] = LOGOUT
    tokens, new_cookie = svc.csrf.tokens(request, *forms.values())
    t = words(svc.lang)
    rooms = [] if session is None else [
        {"key": key, "path": path, "name": t[key]} for key, path, what in ROOMS if session.actor.may(what)]
    html = environment(svc).get_template(template).render(
        t=t, lang=svc.lang, site=svc.config.site, session=session, rooms=rooms, forms=forms,
        csrf=dict(zip(forms, tokens, strict=True)), path=request.url.path, **ctx)
    response = HTMLResponse(html, status_code=status)
    svc.csrf.set_cookie(request, response, new_cookie)
    return response


Handler = Callable[[Request, "Session", FormData | None], Awaitable[Response]]


def room(what: str | None, *, upload: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """The guard of a console route: a live session, the role (``users.CAN[what]``;
    None: any signed-in user), and on POST the form and its CSRF token
    (``upload``: the form may carry one file; the body limit of ``[web]`` applies)."""
    from . import auth

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            svc = service(request)
            session = await run_in_threadpool(auth.current_session, svc, request)
            if session is None:
                return RedirectResponse(LOGIN, status_code=303)
            t = words(svc.lang)
            if what is not None and not session.actor.may(what):
                raise HTTPException(403, t["forbidden"])
            row_id = request.path_params.get("id")
            if row_id is not None and not 0 < row_id <= MAX_ID:
                raise HTTPException(404)  # no such row, and past what the database's INTEGER holds
            form = None
            if request.method == "POST":
                form = await (_read_upload(request, t) if upload else read_form(request))
                svc.csrf.check(request, form.get(CSRF_FIELD), request.url.path, t["err_csrf"])
            return await handler(request, session, form)

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


async def _read_upload(request: Request, t: dict[str, str]) -> FormData:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise HTTPException(415)
    try:
        # One file and a few fields, plus one 分野 checkbox per configured field (the article import).
        return await request.form(max_files=1, max_fields=10 + len(service(request).config.fields))
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        raise HTTPException(400, t["err_upload"]) from None
    except (ValueError, UnicodeDecodeError, KeyError):
        raise HTTPException(400, t["err_upload"]) from None


def text(form: FormData | None, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value if isinstance(value, str) else ""
