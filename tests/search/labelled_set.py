"""A labelled retrieval set for recall: three volumes (projects) of one comic series, 《青石镇》, with their
characters, chapter texts, history summaries and the chats of their authors with the assistant; and Chinese
queries, each with the records it should find (by stable key).

``labelled_set_load`` writes it through the real write paths (projects, contexts and appends, history records,
characters, workflow runs), so what is measured is what the product indexes. ``measure`` computes recall@k and
MRR for any search function, so other rankings (the hybrid one) are measured on the same set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Project keys → (public id, name, description).
PROJECTS: dict[str, tuple[str, str, str]] = {
    "p1": ("qingshi-1", "青石镇 第一卷 雨夜来客", "江南小镇青石镇，一个雨夜，一位受伤的剑客敲开了茶馆的门。"),
    "p2": ("qingshi-2", "青石镇 第二卷 古井", "镇东古井夜里传出歌声，失踪的孩子和二十年前的旧案。"),
    "p3": ("qingshi-3", "青石镇 第三卷 灯会", "元宵灯会，县令的寿宴，戏班与盗贼，一场大火。"),
}


@dataclass(frozen=True)
class CharacterRecord:
    key: str
    project: str
    name: str
    aliases: tuple[str, ...]
    appearance: dict[str, str]
    traits: tuple[str, ...]


CHARACTERS: list[CharacterRecord] = [
    CharacterRecord(
        "p1.char.linxiaoyu",
        "p1",
        "林小雨",
        ("小雨",),
        {"hair": "乌黑长发扎成麻花辫", "clothing": "淡青色布裙", "accessory": "总撑着一把红色油纸伞"},
        ("好奇", "倔强", "心地善良"),
    ),
    CharacterRecord(
        "p1.char.shenmo",
        "p1",
        "沈默",
        ("阿默",),
        {"hair": "黑发束冠", "clothing": "灰色长衫，左肩有刀伤", "weapon": "一柄缠着布条的旧剑"},
        ("寡言", "冷静", "重情义"),
    ),
    CharacterRecord(
        "p1.char.laozhou",
        "p1",
        "老周",
        ("周伯",),
        {"face": "花白胡子，眯眼笑", "clothing": "褐色围裙", "accessory": "腰间挂着铜壶"},
        ("热心", "爱讲古", "嘴碎"),
    ),
    CharacterRecord(
        "p1.char.suwan",
        "p1",
        "苏婉",
        ("苏大夫",),
        {"hair": "盘发插木簪", "clothing": "素白医袍", "accessory": "随身药箱"},
        ("温柔", "医术高明", "藏着心事"),
    ),
    CharacterRecord(
        "p1.char.tuanzi",
        "p1",
        "团子",
        ("白猫",),
        {"fur": "雪白的长毛猫", "eyes": "一只蓝眼一只金眼"},
        ("贪吃", "爱睡懒觉"),
    ),
    CharacterRecord(
        "p1.char.heiyiren",
        "p1",
        "黑衣人",
        ("刺客",),
        {"face": "蒙面，只露出一双眼睛", "clothing": "夜行衣", "weapon": "淬毒飞镖"},
        ("阴狠", "来历不明"),
    ),
    CharacterRecord(
        "p1.char.lizheng",
        "p1",
        "李铮",
        ("李捕头",),
        {"face": "方脸浓眉", "clothing": "皂色公服", "weapon": "铁尺"},
        ("刚直", "急躁"),
    ),
    CharacterRecord(
        "p2.char.linxiaoyu",
        "p2",
        "林小雨",
        ("小雨",),
        {"hair": "麻花辫剪短到肩", "clothing": "青布短袄", "accessory": "红色油纸伞"},
        ("勇敢", "好奇"),
    ),
    CharacterRecord(
        "p2.char.shenmo",
        "p2",
        "沈默",
        ("阿默",),
        {"clothing": "灰色长衫", "weapon": "新打的长剑，剑穗是红绳"},
        ("寡言", "守护小雨"),
    ),
    CharacterRecord(
        "p2.char.mengpopo",
        "p2",
        "孟婆婆",
        ("算命婆",),
        {"face": "满脸皱纹，一只眼睛是白翳", "clothing": "黑色斗篷", "accessory": "竹签筒"},
        ("神神叨叨", "知道旧案真相"),
    ),
    CharacterRecord(
        "p2.char.shitou",
        "p2",
        "石头",
        ("小石头",),
        {"face": "圆脸，缺了一颗门牙", "clothing": "打补丁的短褂", "accessory": "弹弓"},
        ("调皮", "胆小却讲义气"),
    ),
    CharacterRecord(
        "p2.char.hanfeng",
        "p2",
        "韩锋",
        ("韩铁匠",),
        {"body": "魁梧，胳膊上有烫伤疤", "clothing": "皮围裙"},
        ("沉默", "手艺好", "失踪孩子的父亲"),
    ),
    CharacterRecord(
        "p2.char.jingzhong",
        "p2",
        "井中女子",
        ("白衣女子",),
        {"hair": "湿漉漉的长发", "clothing": "白衣", "face": "苍白，看不清五官"},
        ("哀怨", "唱着旧时的歌谣"),
    ),
    CharacterRecord(
        "p2.char.laozhou",
        "p2",
        "老周",
        ("周伯",),
        {"face": "花白胡子", "clothing": "褐色围裙"},
        ("热心", "年轻时见过古井旧案"),
    ),
    CharacterRecord(
        "p3.char.zhaodequan",
        "p3",
        "赵德全",
        ("赵大人", "县令"),
        {"body": "大腹便便", "clothing": "绯色官袍", "accessory": "翡翠扳指"},
        ("贪财", "好面子", "怕老婆"),
    ),
    CharacterRecord(
        "p3.char.liuqingqing",
        "p3",
        "柳青青",
        ("青青", "柳老板"),
        {"face": "丹凤眼", "clothing": "戏服水袖", "accessory": "一把描金折扇"},
        ("骄傲", "唱腔动人", "为戏班还债"),
    ),
    CharacterRecord(
        "p3.char.chenjiu",
        "p3",
        "陈九",
        ("九哥", "陈老九"),
        {"face": "瘦脸，嘴角一颗痣", "clothing": "破旧的短打", "accessory": "腰间藏着开锁的铁丝"},
        ("油嘴滑舌", "劫富济贫", "轻功好"),
    ),
    CharacterRecord(
        "p3.char.linxiaoyu",
        "p3",
        "林小雨",
        ("小雨",),
        {"hair": "短发", "clothing": "红色斗篷", "accessory": "兔子花灯"},
        ("机灵", "长大了一些"),
    ),
    CharacterRecord(
        "p3.char.shenmo",
        "p3",
        "沈默",
        ("阿默",),
        {"clothing": "黑色劲装", "weapon": "长剑"},
        ("寡言", "身份被揭开：前朝将军之子"),
    ),
    CharacterRecord(
        "p3.char.zhaofuren",
        "p3",
        "赵夫人",
        ("县令夫人",),
        {"hair": "高髻插金步摇", "clothing": "紫色锦缎"},
        ("精明", "掌管县衙的账本"),
    ),
    CharacterRecord(
        "p3.char.aqiang",
        "p3",
        "阿强",
        ("灯笼匠",),
        {"body": "瘦高个", "clothing": "沾满浆糊的围裙"},
        ("手巧", "暗恋柳青青"),
    ),
]

# (key, project, title, text)
STORIES: list[tuple[str, str, str]] = [
    (
        "p1.story.ch1",
        "p1",
        "第一章 雨夜。青石镇的雨下了三天三夜。茶馆快打烊的时候，老周听见有人敲门。门外站着一个浑身湿透的年轻人，"
        "左肩的伤口还在流血，手里握着一柄缠着布条的旧剑。林小雨撑着红伞从后院跑来，把他扶到火炉边。"
        "年轻人只说了两个字：沈默。",
    ),
    (
        "p1.story.ch2",
        "p1",
        "第二章 药香。苏婉提着药箱赶到茶馆，替沈默清洗伤口，发现伤口发黑，是中了毒。她连夜上山采一种叫"
        "七叶莲的草药。林小雨偷偷跟在后面，在山路上捡到一枚刻着蛇纹的铜牌。",
    ),
    (
        "p1.story.ch3",
        "p1",
        "第三章 夜袭。三更时分，黑衣人翻过茶馆的院墙，淬毒飞镖钉在窗棂上。团子弓起背大叫，惊醒了所有人。"
        "沈默带伤拔剑，与黑衣人在屋顶交手。李捕头带着衙役赶到时，黑衣人已经逃进了竹林，只留下一滩血迹。",
    ),
    (
        "p2.story.ch1",
        "p2",
        "第一章 歌声。入秋以后，镇东的古井每到子时就传出女子的歌声。铁匠韩锋的儿子去井边打水，再也没有回来。"
        "镇上的人都说，是井里的白衣女子把孩子带走了。",
    ),
    (
        "p2.story.ch2",
        "p2",
        "第二章 算命。林小雨和石头去找孟婆婆算命。孟婆婆摇着竹签筒，抽出一支下下签，说二十年前古井里淹死过"
        "一个新娘，她的嫁妆至今下落不明。老周听了脸色大变，摔碎了手里的茶碗。",
    ),
    (
        "p2.story.ch3",
        "p2",
        "第三章 井底。沈默用绳子吊着下到井底，发现井壁有一道暗门，通往一条地道。地道尽头是一间石室，"
        "韩锋的儿子被关在里面，旁边堆着生锈的箱子，箱子上刻着和铜牌一样的蛇纹。",
    ),
    (
        "p3.story.ch1",
        "p3",
        "第一章 灯会。元宵节，青石镇办起了灯会。灯笼匠阿强扎了一条十丈长的龙灯，林小雨提着兔子花灯在人群里"
        "找沈默。县令赵德全要在灯会当晚办五十岁寿宴，请来了柳青青的戏班唱堂会。",
    ),
    (
        "p3.story.ch2",
        "p3",
        "第二章 堂会。柳青青唱到一半，县衙后院突然起火。混乱中，陈九施展轻功翻进库房，用铁丝打开了锁，"
        "却发现库房里除了金银，还有一本记着蛇纹帮往来的账本。赵夫人派人四处搜捕盗贼。",
    ),
    (
        "p3.story.ch3",
        "p3",
        "第三章 真相。账本上写明，二十年前的古井旧案是赵德全勾结蛇纹帮所为。沈默的真实身份是前朝将军之子，"
        "他来青石镇就是为了追查父亲的死因。大火被扑灭，赵德全被押往府城，柳青青的戏班还清了债。",
    ),
]

# (key, project, action, summary)
HISTORY: list[tuple[str, str, str, str]] = [
    ("p1.hist.01", "p1", "plot_summarized", "第一章剧情梗概：雨夜里受伤的剑客来到茶馆，林小雨救下了他。"),
    ("p1.hist.02", "p1", "character_designed", "设计了沈默的造型：灰色长衫，左肩刀伤，旧剑缠布条。"),
    ("p1.hist.03", "p1", "character_designed", "设计了林小雨的造型：麻花辫，淡青布裙，红色油纸伞。"),
    ("p1.hist.04", "p1", "scene_composed", "第一章第3格：茶馆内景，火炉边，窗外大雨。"),
    ("p1.hist.05", "p1", "scene_composed", "第二章第5格：月夜山路，苏婉在悬崖边采七叶莲。"),
    ("p1.hist.06", "p1", "image_generation_completed", "第二章全部12格已绘制完成，水墨风格。"),
    ("p1.hist.07", "p1", "plot_summarized", "第二章剧情梗概：沈默中毒，苏婉上山采药，小雨捡到蛇纹铜牌。"),
    ("p1.hist.08", "p1", "scene_composed", "第三章第1格：屋顶对决，沈默与黑衣人剑光交错。"),
    ("p1.hist.09", "p1", "character_designed", "设计了团子：白色长毛猫，异色瞳。"),
    ("p1.hist.10", "p1", "text_analyzed", "分析了第三章文本：动作场面多，建议增加分镜。"),
    ("p1.hist.11", "p1", "style_rated", "水墨风格模板评分4.5，读者反馈雨夜氛围很好。"),
    ("p1.hist.12", "p1", "plot_summarized", "第三章剧情梗概：黑衣人夜袭茶馆，李捕头赶到，刺客逃入竹林。"),
    ("p2.hist.01", "p2", "plot_summarized", "第一章剧情梗概：古井子时传出歌声，韩铁匠的儿子失踪。"),
    ("p2.hist.02", "p2", "character_designed", "设计了井中女子：白衣，湿发，面目模糊，恐怖但不血腥。"),
    ("p2.hist.03", "p2", "character_designed", "设计了孟婆婆：黑斗篷，白翳眼，竹签筒。"),
    ("p2.hist.04", "p2", "scene_composed", "第一章第7格：子时的古井，月光照在井沿的青苔上。"),
    ("p2.hist.05", "p2", "scene_composed", "第二章第2格：孟婆婆的算命摊，抽出下下签的特写。"),
    ("p2.hist.06", "p2", "text_compressed", "第二章文本压缩到原文的40%，保留了新娘嫁妆的伏笔。"),
    ("p2.hist.07", "p2", "plot_summarized", "第三章剧情梗概：沈默下井，发现暗门、地道和被关的孩子。"),
    ("p2.hist.08", "p2", "scene_composed", "第三章第9格：石室里生锈的箱子，蛇纹特写。"),
    ("p2.hist.09", "p2", "image_generation_completed", "第三章全部15格已绘制完成，色调偏冷。"),
    ("p2.hist.10", "p2", "character_designed", "设计了石头：圆脸缺门牙，补丁短褂，弹弓。"),
    ("p2.hist.11", "p2", "style_rated", "冷色调悬疑风格评分4.2，有读者说井中女子太吓人。"),
    ("p2.hist.12", "p2", "text_analyzed", "分析了第二章文本：老周摔碎茶碗暗示他知道旧案。"),
    ("p3.hist.01", "p3", "plot_summarized", "第一章剧情梗概：元宵灯会，龙灯，县令寿宴请戏班唱堂会。"),
    ("p3.hist.02", "p3", "character_designed", "设计了赵德全：大腹便便，绯色官袍，翡翠扳指。"),
    ("p3.hist.03", "p3", "character_designed", "设计了柳青青：丹凤眼，水袖戏服，描金折扇。"),
    ("p3.hist.04", "p3", "scene_composed", "第一章第1格：灯会全景，十丈长的龙灯穿过长街。"),
    ("p3.hist.05", "p3", "scene_composed", "第二章第6格：县衙后院起火，火光映红了夜空。"),
    ("p3.hist.06", "p3", "scene_composed", "第二章第8格：陈九用铁丝开锁，库房里的金银和账本。"),
    ("p3.hist.07", "p3", "plot_summarized", "第二章剧情梗概：堂会时起火，陈九盗出蛇纹帮账本。"),
    ("p3.hist.08", "p3", "plot_summarized", "第三章剧情梗概：账本揭开旧案，沈默是前朝将军之子，县令被押走。"),
    ("p3.hist.09", "p3", "image_generation_completed", "第三章全部20格已绘制完成，暖色调节日风格。"),
    ("p3.hist.10", "p3", "character_designed", "设计了陈九：瘦脸，嘴角有痣，破短打。"),
    ("p3.hist.11", "p3", "style_rated", "节日暖色风格评分4.8，灯会那一页最受欢迎。"),
    ("p3.hist.12", "p3", "text_compressed", "第三章文本压缩到原文的35%，删掉了寿宴上的宾客名单。"),
]

# Each project's chat with the assistant, in order: (key, role, content). The context keeps 20 messages in its
# window, so the early ones are archived by the time the set is loaded: search must still find them.
MESSAGES: dict[str, list[tuple[str, str, str]]] = {
    "p1": [
        ("p1.msg.01", "user", "我想画一部江南小镇的武侠漫画，开头是一个雨夜。"),
        ("p1.msg.02", "assistant", "好的，可以从茶馆打烊前的雨声写起，营造安静又不安的气氛。"),
        ("p1.msg.03", "user", "女主角叫林小雨，十五岁，总撑着一把红伞。"),
        ("p1.msg.04", "assistant", "红伞在灰蒙蒙的雨景里会很醒目，可以作为她的标志性道具。"),
        ("p1.msg.05", "user", "男主角沈默话很少，肩上有伤，剑用布条缠着。"),
        ("p1.msg.06", "assistant", "布条缠剑暗示他在隐藏身份，后面可以揭开剑上的秘密。"),
        ("p1.msg.07", "user", "茶馆老板老周是个爱讲古的老头，大家叫他周伯。"),
        ("p1.msg.08", "assistant", "周伯可以承担讲述镇子往事的角色，顺便埋下伏笔。"),
        ("p1.msg.09", "user", "第二章我想加一个女大夫，名字叫苏婉。"),
        ("p1.msg.10", "assistant", "苏婉可以是镇上唯一的大夫，她发现沈默的伤口有毒。"),
        ("p1.msg.11", "user", "毒用什么解？想要一种有名字的草药。"),
        ("p1.msg.12", "assistant", "可以用七叶莲，长在悬崖边，只在月圆之夜开花。"),
        ("p1.msg.13", "user", "小雨在山上捡到一个东西，作为后面几卷的线索。"),
        ("p1.msg.14", "assistant", "一枚刻着蛇纹的铜牌怎么样？蛇纹可以是一个秘密帮派的标记。"),
        ("p1.msg.15", "user", "好，蛇纹帮就是幕后黑手。"),
        ("p1.msg.16", "user", "茶馆里养一只猫吧，白色的，叫团子。"),
        ("p1.msg.17", "assistant", "团子可以在夜袭时第一个发现刺客，给紧张场面加点可爱。"),
        ("p1.msg.18", "user", "第三章的刺客穿夜行衣，用毒飞镖。"),
        ("p1.msg.19", "assistant", "屋顶对决可以用大俯视角，瓦片碎裂、月光下剑光一闪。"),
        ("p1.msg.20", "user", "李捕头来晚了一步，这个人要有点急躁。"),
        ("p1.msg.21", "assistant", "李捕头可以拿着铁尺跺脚骂人，制造一点喜剧效果。"),
        ("p1.msg.22", "user", "第一卷的画风用水墨，雨要画得很密。"),
        ("p1.msg.23", "assistant", "水墨画风配上密集的雨线，会很有江南的味道。"),
        ("p1.msg.24", "user", "封面画小雨撑伞站在石桥上，背后是沈默的背影。"),
        ("p1.msg.25", "assistant", "封面构图可以让红伞在画面正中，石桥做前景的曲线。"),
        ("p1.msg.26", "user", "每章控制在十二格左右，节奏不要太拖。"),
        ("p1.msg.27", "assistant", "十二格的话，每章大约三页，对话要精简。"),
        ("p1.msg.28", "user", "竹林那一段要留一滩血迹，暗示刺客受了伤。"),
        ("p1.msg.29", "assistant", "血迹可以在下一卷成为追查刺客的线索。"),
        ("p1.msg.30", "user", "苏婉有心事，她好像认识那个刺客。"),
        ("p1.msg.31", "assistant", "可以让苏婉看到飞镖时手一抖，留给读者去猜。"),
        ("p1.msg.32", "user", "团子的眼睛一只蓝一只金，这个细节别忘了。"),
        ("p1.msg.33", "assistant", "已记下：团子是异色瞳，左蓝右金。"),
        ("p1.msg.34", "user", "第一卷的结尾，沈默决定留在青石镇。"),
        ("p1.msg.35", "assistant", "结尾可以停在他把旧剑挂在茶馆墙上的画面。"),
    ],
    "p2": [
        ("p2.msg.01", "user", "第二卷换成悬疑风格，主线是镇东的古井。"),
        ("p2.msg.02", "assistant", "古井夜半传来歌声，很适合做悬疑的开场。"),
        ("p2.msg.03", "user", "歌声是一首旧时的出嫁歌谣。"),
        ("p2.msg.04", "assistant", "出嫁歌谣可以和二十年前淹死的新娘联系起来。"),
        ("p2.msg.05", "user", "铁匠韩锋的儿子失踪了，韩锋是个沉默的大个子。"),
        ("p2.msg.06", "assistant", "韩铁匠可以一夜之间白了头，在井边守着不肯走。"),
        ("p2.msg.07", "user", "加一个小孩配角，叫石头，缺颗门牙，玩弹弓。"),
        ("p2.msg.08", "assistant", "石头胆小却讲义气，可以陪小雨一起去查案。"),
        ("p2.msg.09", "user", "算命的孟婆婆一只眼是白的，说话神神叨叨。"),
        ("p2.msg.10", "assistant", "孟婆婆可以用竹签预言，抽到下下签时画面要压暗。"),
        ("p2.msg.11", "user", "新娘的嫁妆一直没找到，这是伏笔。"),
        ("p2.msg.12", "assistant", "嫁妆里可以藏着能证明旧案真相的东西。"),
        ("p2.msg.13", "user", "老周听说旧案时摔碎了茶碗。"),
        ("p2.msg.14", "assistant", "摔碗的特写能让读者怀疑老周隐瞒了什么。"),
        ("p2.msg.15", "user", "井中女子要吓人但不能血腥，读者里有小孩。"),
        ("p2.msg.16", "assistant", "可以只画湿发和白衣，脸始终藏在阴影里。"),
        ("p2.msg.17", "user", "沈默下井用的是绳子，井壁上有暗门。"),
        ("p2.msg.18", "assistant", "暗门后接一条地道，地道里用火折子照明。"),
        ("p2.msg.19", "user", "地道尽头的石室里关着韩家的孩子。"),
        ("p2.msg.20", "assistant", "石室里再放几只生锈的箱子，箱子上有蛇纹。"),
        ("p2.msg.21", "user", "蛇纹和第一卷小雨捡的铜牌要对得上。"),
        ("p2.msg.22", "assistant", "这样两卷的线索就连起来了，蛇纹帮浮出水面。"),
        ("p2.msg.23", "user", "第二卷的色调偏冷，多用青灰色。"),
        ("p2.msg.24", "assistant", "青灰色调配合月光和青苔，会很阴森。"),
        ("p2.msg.25", "user", "沈默的剑穗换成红绳，是小雨给他编的。"),
        ("p2.msg.26", "assistant", "红绳剑穗是个温柔的小细节，可以在打斗时特写。"),
        ("p2.msg.27", "user", "第二卷每章十五格。"),
        ("p2.msg.28", "assistant", "十五格的话可以多给古井几个空镜头。"),
        ("p2.msg.29", "user", "小雨把麻花辫剪短了，显得更干练。"),
        ("p2.msg.30", "assistant", "短发的小雨可以在第二卷开头用一格特写交代。"),
        ("p2.msg.31", "user", "孩子救出来以后，韩锋给沈默打了一把新剑。"),
        ("p2.msg.32", "assistant", "新剑可以在第三卷的决战里派上用场。"),
        ("p2.msg.33", "user", "第二卷结尾，孟婆婆说真正的凶手在县衙。"),
        ("p2.msg.34", "assistant", "这句话可以直接引出第三卷的县令。"),
    ],
    "p3": [
        ("p3.msg.01", "user", "第三卷是大结局，背景放在元宵灯会。"),
        ("p3.msg.02", "assistant", "灯会的热闹和阴谋的紧张可以形成反差。"),
        ("p3.msg.03", "user", "县令赵德全大腹便便，贪财好面子，还怕老婆。"),
        ("p3.msg.04", "assistant", "赵大人怕老婆的桥段可以缓和一下沉重的剧情。"),
        ("p3.msg.05", "user", "县令夫人精明，掌管县衙的账本。"),
        ("p3.msg.06", "assistant", "账本正好可以成为揭开旧案的关键证据。"),
        ("p3.msg.07", "user", "戏班的台柱叫柳青青，丹凤眼，唱腔很好听。"),
        ("p3.msg.08", "assistant", "柳老板可以为了替戏班还债答应去唱堂会。"),
        ("p3.msg.09", "user", "再加一个盗贼陈九，大家叫他九哥，轻功好。"),
        ("p3.msg.10", "assistant", "九哥劫富济贫，偷县衙库房时意外拿到账本。"),
        ("p3.msg.11", "user", "陈九开锁用的是铁丝。"),
        ("p3.msg.12", "assistant", "铁丝开锁的分镜可以画手部特写，三格连续动作。"),
        ("p3.msg.13", "user", "灯笼匠阿强扎了一条十丈长的龙灯。"),
        ("p3.msg.14", "assistant", "龙灯穿街的跨页会是整卷最壮观的画面。"),
        ("p3.msg.15", "user", "阿强暗恋柳青青，但一直不敢说。"),
        ("p3.msg.16", "assistant", "可以让阿强偷偷给柳青青扎一盏折扇形状的花灯。"),
        ("p3.msg.17", "user", "寿宴当晚县衙后院起火。"),
        ("p3.msg.18", "assistant", "大火的场面用暖红色，人群四散奔逃。"),
        ("p3.msg.19", "user", "火是谁放的？我想让读者猜错。"),
        ("p3.msg.20", "assistant", "可以先让读者怀疑陈九，最后揭晓是赵夫人为了销毁证据。"),
        ("p3.msg.21", "user", "沈默的身份揭开：他是前朝将军之子。"),
        ("p3.msg.22", "assistant", "他来青石镇是为了追查父亲的死因，这样前两卷的沉默就有了理由。"),
        ("p3.msg.23", "user", "小雨提着兔子花灯在人群里找沈默。"),
        ("p3.msg.24", "assistant", "兔子花灯和第一卷的红伞呼应，都是小雨的标志。"),
        ("p3.msg.25", "user", "小雨披着红色斗篷，短发。"),
        ("p3.msg.26", "assistant", "红斗篷在灯会的人潮里一眼就能认出来。"),
        ("p3.msg.27", "user", "最后赵德全被押往府城。"),
        ("p3.msg.28", "assistant", "押送的囚车可以从灯会的残灯中穿过，作为收尾。"),
        ("p3.msg.29", "user", "第三卷用暖色调的节日风格。"),
        ("p3.msg.30", "assistant", "暖色调和前两卷的水墨、冷色形成三卷不同的情绪。"),
        ("p3.msg.31", "user", "第三卷每章二十格，结局要有余味。"),
        ("p3.msg.32", "assistant", "结尾可以回到茶馆，老周在讲这段往事，团子在炉边睡觉。"),
        ("p3.msg.33", "user", "柳青青的戏班最后还清了债。"),
        ("p3.msg.34", "assistant", "可以画戏班离开青石镇时在船头唱最后一段。"),
    ],
}

# (query, the keys it should find). Each names a fact the set states in one or a few records.
QUERIES: list[tuple[str, tuple[str, ...]]] = [
    ("红伞", ("p1.msg.03", "p1.msg.04", "p1.story.ch1", "p1.char.linxiaoyu", "p1.msg.25")),
    ("七叶莲", ("p1.msg.12", "p1.story.ch2", "p1.hist.05")),
    ("蛇纹铜牌", ("p1.msg.14", "p1.story.ch2", "p1.hist.07", "p2.msg.21")),
    ("团子", ("p1.char.tuanzi", "p1.msg.16", "p1.msg.17", "p1.msg.33", "p1.hist.09")),
    ("异色瞳的猫", ("p1.hist.09", "p1.msg.33", "p1.char.tuanzi")),
    ("毒飞镖", ("p1.msg.18", "p1.story.ch3", "p1.char.heiyiren")),
    ("屋顶对决", ("p1.msg.19", "p1.hist.08")),
    ("李捕头", ("p1.char.lizheng", "p1.msg.20", "p1.msg.21", "p1.hist.12", "p1.story.ch3")),
    ("铁尺", ("p1.char.lizheng", "p1.msg.21")),
    ("水墨", ("p1.msg.22", "p1.msg.23", "p1.hist.06", "p1.hist.11", "p3.msg.30")),
    ("石桥封面", ("p1.msg.24", "p1.msg.25")),
    ("竹林血迹", ("p1.msg.28", "p1.msg.29", "p1.story.ch3", "p1.hist.12")),
    ("苏婉认识刺客", ("p1.msg.30", "p1.msg.31")),
    ("药箱", ("p1.char.suwan", "p1.story.ch2")),
    ("周伯", ("p1.msg.07", "p1.msg.08", "p1.char.laozhou", "p2.char.laozhou")),
    ("布条缠剑", ("p1.msg.05", "p1.msg.06", "p1.story.ch1", "p1.hist.02", "p1.char.shenmo")),
    ("悬崖", ("p1.msg.12", "p1.hist.05")),
    ("沈默留在青石镇", ("p1.msg.34", "p1.msg.35")),
    ("古井歌声", ("p2.msg.02", "p2.story.ch1", "p2.hist.01")),
    ("出嫁歌谣", ("p2.msg.03", "p2.msg.04")),
    ("新娘的嫁妆", ("p2.msg.11", "p2.msg.12", "p2.story.ch2", "p2.hist.06")),
    ("韩铁匠", ("p2.char.hanfeng", "p2.msg.05", "p2.msg.06", "p2.hist.01", "p2.story.ch1")),
    ("弹弓", ("p2.char.shitou", "p2.msg.07", "p2.hist.10")),
    ("缺门牙的孩子", ("p2.char.shitou", "p2.msg.07", "p2.hist.10")),
    ("孟婆婆算命", ("p2.story.ch2", "p2.hist.05", "p2.char.mengpopo", "p2.msg.09")),
    ("下下签", ("p2.story.ch2", "p2.hist.05", "p2.msg.10")),
    ("摔碎茶碗", ("p2.msg.13", "p2.msg.14", "p2.story.ch2", "p2.hist.12")),
    ("井中女子吓人", ("p2.msg.15", "p2.hist.11", "p2.hist.02")),
    ("暗门地道", ("p2.msg.17", "p2.msg.18", "p2.story.ch3", "p2.hist.07")),
    ("石室", ("p2.msg.19", "p2.msg.20", "p2.story.ch3", "p2.hist.08")),
    ("生锈的箱子", ("p2.msg.20", "p2.story.ch3", "p2.hist.08")),
    ("冷色调", ("p2.msg.23", "p2.hist.09", "p2.hist.11", "p3.msg.30")),
    ("红绳剑穗", ("p2.msg.25", "p2.msg.26", "p2.char.shenmo")),
    ("剪短辫子", ("p2.msg.29", "p2.char.linxiaoyu")),
    ("打了一把新剑", ("p2.msg.31", "p2.msg.32", "p2.char.shenmo")),
    ("凶手在县衙", ("p2.msg.33", "p2.msg.34")),
    ("青苔", ("p2.hist.04", "p2.msg.24")),
    ("元宵灯会", ("p3.msg.01", "p3.story.ch1", "p3.hist.01", "p3.hist.04")),
    ("县令怕老婆", ("p3.msg.03", "p3.msg.04", "p3.char.zhaodequan")),
    ("翡翠扳指", ("p3.char.zhaodequan", "p3.hist.02")),
    ("账本", ("p3.msg.05", "p3.msg.06", "p3.story.ch2", "p3.story.ch3", "p3.char.zhaofuren", "p3.hist.06")),
    ("柳青青唱腔", ("p3.msg.07", "p3.char.liuqingqing")),
    ("戏班还债", ("p3.msg.08", "p3.msg.33", "p3.story.ch3", "p3.char.liuqingqing")),
    ("九哥", ("p3.msg.09", "p3.msg.10", "p3.char.chenjiu")),
    ("铁丝开锁", ("p3.msg.11", "p3.msg.12", "p3.story.ch2", "p3.hist.06")),
    ("龙灯", ("p3.msg.13", "p3.msg.14", "p3.story.ch1", "p3.hist.04", "p3.hist.01")),
    ("阿强暗恋", ("p3.msg.15", "p3.char.aqiang")),
    ("后院起火", ("p3.msg.17", "p3.story.ch2", "p3.hist.05")),
    ("谁放的火", ("p3.msg.19", "p3.msg.20")),
    ("前朝将军之子", ("p3.msg.21", "p3.story.ch3", "p3.hist.08", "p3.char.shenmo")),
    ("兔子花灯", ("p3.msg.23", "p3.msg.24", "p3.story.ch1", "p3.char.linxiaoyu")),
    ("红色斗篷", ("p3.msg.25", "p3.msg.26", "p3.char.linxiaoyu")),
    ("押往府城", ("p3.msg.27", "p3.story.ch3")),
    ("描金折扇", ("p3.char.liuqingqing", "p3.hist.03")),
    ("寿宴", ("p3.story.ch1", "p3.msg.17", "p3.hist.01", "p3.hist.12")),
    # A single character, and names jieba cuts apart in one place and keeps whole in another.
    ("猫", ("p1.char.tuanzi", "p1.msg.16", "p1.hist.09")),
    ("伞", ("p1.msg.03", "p1.msg.24", "p1.story.ch1", "p1.char.linxiaoyu", "p1.hist.03")),
    ("林小雨", ("p1.char.linxiaoyu", "p2.char.linxiaoyu", "p3.char.linxiaoyu", "p1.msg.03", "p1.story.ch1")),
    ("赵德全", ("p3.char.zhaodequan", "p3.story.ch1", "p3.story.ch3", "p3.hist.02", "p3.msg.03")),
    ("陈九轻功", ("p3.char.chenjiu", "p3.story.ch2", "p3.msg.09")),
]


@dataclass(frozen=True)
class LoadedSet:
    """Where each key landed: its kind and the object id the search API names."""

    objects: dict[str, tuple[str, str]]
    projects: dict[str, Any]
    distractors: int = 0  # records written beside the labelled ones, expected by no query

    def key_of(self, kind: str, object_id: str) -> str | None:
        return self._by_object.get((kind, object_id))

    @property
    def _by_object(self) -> dict[tuple[str, str], str]:
        return {value: key for key, value in self.objects.items()}


def labelled_set_load(*, owner: Any) -> LoadedSet:
    """Write the whole set for ``owner`` through the product's write paths; the keys' objects."""
    from memory_app.models import SearchKind
    from memory_app.services.characters import character_create
    from memory_app.services.conversation import NewMessage, context_append, context_create
    from memory_app.services.history import history_record
    from memory_app.services.projects import project_create
    from memory_app.services.workflow.runs import workflow_create

    objects: dict[str, tuple[str, str]] = {}
    projects = {
        key: project_create(owner=owner, project_id=public_id, name=name, description=description)
        for key, (public_id, name, description) in PROJECTS.items()
    }
    for character in CHARACTERS:
        created = character_create(
            user=owner,
            project=projects[character.project],
            name=character.name,
            aliases=list(character.aliases),
            appearance_features=dict(character.appearance),
            personality_traits=list(character.traits),
        )
        objects[character.key] = (SearchKind.CHARACTER.value, str(created.pk))
    for key, project_key, text in STORIES:
        run = workflow_create(
            workflow_type="comic_generation",
            project=projects[project_key],
            owner=owner,
            steps=["text_segmentation"],
            data={"text": text},
            preferences={},
        )
        objects[key] = (SearchKind.STORY.value, str(run.pk))
    for key, project_key, action, summary in HISTORY:
        record = history_record(project=projects[project_key], action=action, user=owner, summary=summary)
        objects[key] = (SearchKind.HISTORY.value, str(record.pk))
    for project_key, chat in MESSAGES.items():
        context = context_create(owner=owner, project=projects[project_key], context_type="chat")
        for key, role, content in chat:  # one append per message, as a chat writes them
            _, rows = context_append(context=context, messages=[NewMessage(role=role, content=content)])
            objects[key] = (SearchKind.MESSAGE.value, str(rows[0].pk))
    # Beside them, every sentence of another story (the repository's sample: a village, a boy, a fisherman) as
    # the messages of another chat of the first project: text no query asks for, that a careless ranking returns.
    context = context_create(owner=owner, project=next(iter(projects.values())), context_type="chat")
    for sentence in DISTRACTOR_SENTENCES:
        context_append(context=context, messages=[NewMessage(role="user", content=sentence)])
    return LoadedSet(objects=objects, projects=projects, distractors=len(DISTRACTOR_SENTENCES))


DISTRACTOR_SENTENCES = [
    sentence
    for sentence in re.split(
        r"(?<=[。！？])", (Path(__file__).resolve().parents[2] / "samples" / "story_zh.txt").read_text("utf-8")
    )
    if len(sentence.strip()) >= 6
]


@dataclass(frozen=True)
class Measurement:
    recall_at_k: float
    mrr: float
    misses: list[tuple[str, list[str], list[str]]]  # (query, expected keys not found in the top k, top k found)


def measure(loaded: LoadedSet, search: Callable[[str], Sequence[tuple[str, str]]], *, k: int = 5) -> Measurement:
    """recall@k (per query: the share of its expected records in the top k, out of at most k; averaged) and MRR
    (the mean of 1 / rank of the first expected record, 0 when none is in the answer) of ``search``, which
    answers (kind, object id) pairs best first."""
    recalls, reciprocal_ranks, misses = [], [], []
    for query, expected in QUERIES:
        found = [loaded.key_of(kind, object_id) or f"{kind}:{object_id}" for kind, object_id in search(query)]
        top = found[:k]
        hit = [key for key in expected if key in top]
        recalls.append(len(hit) / min(len(expected), k))
        rank = next((position for position, key in enumerate(found, 1) if key in expected), None)
        reciprocal_ranks.append(1 / rank if rank else 0.0)
        if len(hit) < min(len(expected), k):
            misses.append((query, [key for key in expected if key not in top], top))
    return Measurement(
        recall_at_k=sum(recalls) / len(recalls), mrr=sum(reciprocal_ranks) / len(reciprocal_ranks), misses=misses
    )
