"""A labelled corpus for character extraction: short Chinese passages written for this test, each with the
characters who should be drawn (``name`` and the ``aliases`` the passage gives them).

Written as a story writer would, not to suit the extractor: full names with single and compound surnames, forms
of address (老周, 周伯, 杨婶, 马师傅), given names used alone (小雨 for 林小雨), nicknames tied by 「人称」,
「也就是」 or 「都叫他」, idioms that jieba tags as names (东张西望), people who are only talked about (in
someone's words, remembered, on the telephone, mentioned once), and two people of one surname (老王 and his
son 小王, 杨婶 and 杨叔). A character counts as found when the extractor's name is the expected name or one of
its aliases; people who are only mentioned are expected to be absent.
"""

from __future__ import annotations

from typing import TypedDict


class Expected(TypedDict):
    name: str
    aliases: list[str]


class Passage(TypedDict):
    text: str
    characters: list[Expected]


CORPUS: list[Passage] = [
    {
        "text": "林小雨放学回家，在巷子口东张西望，没看见妈妈的身影。小雨只好自己走回家。林小雨推开门，桌上放着一张"
        "纸条。小雨看完纸条，笑了起来。",
        "characters": [{"name": "林小雨", "aliases": ["小雨"]}],
    },
    {
        "text": "欧阳明轩和司马青云是大学同宿舍的好友。一天夜里，欧阳明轩翻来覆去睡不着，司马青云问他怎么了。"
        "欧阳明轩叹了口气，说自己想家了。司马青云拍拍他的肩膀，一言不发地陪他坐到天亮。",
        "characters": [{"name": "欧阳明轩", "aliases": []}, {"name": "司马青云", "aliases": []}],
    },
    {
        "text": "老周在村口开了一家小卖部。每天清晨，周伯都会把门口扫得干干净净。孩子们放学路过，总爱围着老周要糖"
        "吃。周伯笑眯眯地从柜台里抓出一把水果糖。",
        "characters": [{"name": "老周", "aliases": ["周伯"]}],
    },
    {
        "text": "镇上的铁匠张大山力气惊人，人称张铁手。张大山每天天不亮就开炉打铁。有一回，一个外乡人不信邪，非要"
        "和张铁手掰手腕，结果输得心服口服。",
        "characters": [{"name": "张大山", "aliases": ["张铁手"]}],
    },
    {
        "text": "陈默站在外婆的老房子前，想起了小时候外婆常说起的舅舅陈志远。陈志远十八岁就去了南洋，再也没有回来。"
        "陈默推开吱呀作响的木门，屋里落满了灰尘。他在抽屉里找到一张泛黄的照片，照片背面写着陈志远三个字。",
        "characters": [{"name": "陈默", "aliases": []}],
    },
    {
        "text": "“李老师今天又请假了，”王小虎对同桌说，“听说李老师的孩子病了。”同桌赵晴晴点点头，把作业本推了"
        "过去。王小虎一看，赵晴晴早把题目做完了。",
        "characters": [{"name": "王小虎", "aliases": []}, {"name": "赵晴晴", "aliases": []}],
    },
    {
        "text": "刘建明是码头上的搬运工，工友们都叫他阿明。阿明干活从不偷懒，一个人能扛两袋水泥。下工以后，刘建明"
        "总要去码头边的面馆吃一碗牛肉面。",
        "characters": [{"name": "刘建明", "aliases": ["阿明"]}],
    },
    {
        "text": "老王在厂里干了三十年车工，儿子小王去年也进了厂。小王手脚麻利，可老王总嫌他毛手毛脚。一天，小王"
        "做出的零件被质检科评为一等品，老王嘴上不说，晚饭时却多给儿子夹了两块肉。",
        "characters": [{"name": "老王", "aliases": []}, {"name": "小王", "aliases": []}],
    },
    {
        "text": "诸葛亮羽扇纶巾，站在城楼上抚琴。司马懿的大军兵临城下，见城门大开，心中疑虑重重。司马懿犹豫再三，"
        "终于下令退兵。诸葛亮这才松了一口气。",
        "characters": [{"name": "诸葛亮", "aliases": []}, {"name": "司马懿", "aliases": []}],
    },
    {
        "text": "杨婶一早就在院子里晒被子，杨叔蹲在门槛上修自行车。杨婶喊他进屋吃早饭，杨叔头也不抬地应了一声。"
        "直到粥都凉了，杨叔才满手机油地走进来，被杨婶数落了一顿。",
        "characters": [{"name": "杨婶", "aliases": []}, {"name": "杨叔", "aliases": []}],
    },
    {
        "text": "夜深人静，苏晓晓还在灯下赶稿。编辑郑然下午来电话说明天一早就要。苏晓晓揉了揉眼睛，冲了一杯咖啡，"
        "继续埋头苦干。窗外的月亮不知不觉爬上了树梢。",
        "characters": [{"name": "苏晓晓", "aliases": []}],
    },
    {
        "text": "新来的转学生叫孙悦，也就是后来全班都叫她悦悦的那个女孩。第一天上课，孙悦就迟到了。老师让悦悦做"
        "自我介绍，她涨红了脸，半天说不出话。",
        "characters": [{"name": "孙悦", "aliases": ["悦悦"]}],
    },
    {
        "text": "马师傅是修鞋的，摊子就摆在菜市场门口。每天早上，卖菜的何大姐都会给马师傅带一个热包子。马师傅说："
        "“何大姐，你这包子比我修的鞋还实在。”何大姐笑得前仰后合。",
        "characters": [{"name": "马师傅", "aliases": []}, {"name": "何大姐", "aliases": []}],
    },
    {
        "text": "上官婉儿自幼聪慧过人，过目不忘。婉儿十四岁那年，被召进宫中掌管诏命。上官婉儿从此平步青云，朝中大臣"
        "无不对她刮目相看。",
        "characters": [{"name": "上官婉儿", "aliases": ["婉儿"]}],
    },
    {
        "text": "吴奶奶每天都坐在窗前等邮递员。她的孙子吴涛在外地读大学，每个月都会寄一封信回来。邮递员小郭骑着"
        "自行车过来，远远就喊：“吴奶奶，有您的信！”吴奶奶接过信，眯着眼睛读了一遍又一遍。",
        "characters": [{"name": "吴奶奶", "aliases": []}, {"name": "小郭", "aliases": []}],
    },
    {
        "text": "五班有个男生叫钱多多，外号“钱罐子”。下课铃一响，钱多多就从书包里掏出一包辣条。“钱罐子，分我一根！”"
        "同桌冯乐伸手就抢。钱多多护住辣条，冯乐扑了个空。",
        "characters": [{"name": "钱多多", "aliases": ["钱罐子"]}, {"name": "冯乐", "aliases": []}],
    },
    {
        "text": "清明节那天，林峰和妹妹林雪去给爷爷扫墓。林峰想起爷爷生前最爱喝的就是家乡的米酒，特意带了一壶。"
        "林雪蹲在墓前，一边摆祭品一边小声念叨。兄妹俩在墓前站了很久，谁也没有说话。",
        "characters": [{"name": "林峰", "aliases": []}, {"name": "林雪", "aliases": []}],
    },
    {
        "text": "高明是一家小公司的老板，为人老实本分。这天，合伙人马建国提出要撤资，高明左思右想，还是答应了。"
        "马建国临走时握着高明的手说：“老高，对不住了。”",
        "characters": [{"name": "高明", "aliases": ["老高"]}, {"name": "马建国", "aliases": []}],
    },
    {
        # Found using the product: 「大家都叫他老周」 names the subject of its sentence (周伯), not the girl named
        # between them; the grandfather is only remembered.
        "text": "林小雨背着书包走出校门，天正下着小雨。林小雨东张西望，没有看见妈妈。小雨叹了口气。老周推着自行车走"
        "过来，笑着说：“小雨，上车，我送你回家。”周伯是林小雨家楼下修车的师傅，大家都叫他老周。林小雨想起了去世"
        "的爷爷林大山。周伯骑得很慢，林小雨在后座唱起了歌。",
        "characters": [{"name": "林小雨", "aliases": ["小雨"]}, {"name": "老周", "aliases": ["周伯"]}],
    },
]
